import json
import math
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ENGINES
from corel.detection.backbone import Backbone
from corel.experiments.datasets import load_dataset
from corel.detection.models import AutoencoderConfig
from corel.experiments.cli import main
from corel.experiments.training import (
    AtomicCheckpointIO,
    ConnectivityAutoencoder,
    TrainConfig,
    backbone_from_checkpoint,
    death_statistics,
    train,
)

CFG = AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(32,), branches=2, branch_dim=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").x_train[:400]


def run(images, out, epochs, resume=False, lam=1.0, h0_backend="auto", compile_loss=False):
    return train(images, out, CFG, TrainConfig(epochs=epochs, batch_size=40, eta=1.0, lam=lam, seed=3),
                 resume=resume, accelerator="cpu", devices=1, progress=False, h0_backend=h0_backend,
                 compile_loss=compile_loss)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a module outside a Trainer
def test_loss_on_hand_computed_batch():
    module = ConnectivityAutoencoder(CFG.to_dict(), eta=1.0, lam=2.0)
    batch = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    with torch.no_grad():
        for p in module.model.parameters():
            p.zero_()  # every code and reconstruction is 0: recon = 0, deaths all 0
    loss = module.training_step(batch, 0)
    # 2 branches, deaths (0, 0) each: |0 - 1| * 2 per branch, mean over branches = 2; lam = 2
    assert loss.item() == pytest.approx(4.0)


def test_training_writes_run_and_lowers_loss(tmp_path, digits):
    backbone = run(digits, tmp_path, epochs=4)
    assert (tmp_path / "backbone.pt").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "death_times.png").stat().st_size > 0
    rows = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    loss = [float(r.split(",")[header.index("loss")]) for r in rows[1:] if r.split(",")[header.index("loss")]]
    assert loss[-1] < loss[0]
    assert {"death_mean", "death_near_eta", "recon", "connectivity"} <= set(header)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs_completed"] == 4
    loaded = Backbone.load(tmp_path / "backbone.pt")
    torch.testing.assert_close(loaded.encode(digits[:10]), backbone.encode(digits[:10]))


def test_training_leaves_torch_flags_as_it_found_them(tmp_path, digits, monkeypatch):
    """Lightning's deterministic mode (and cuDNN autotuning off) holds during the run only (it used to
    stay on for the process)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # a caller's autotuning, which Lightning turns off
    assert not torch.are_deterministic_algorithms_enabled()
    run(digits, tmp_path / "run", epochs=1)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.backends.cudnn.benchmark


def test_resume_equals_uninterrupted(tmp_path, digits):
    straight = run(digits, tmp_path / "a", epochs=3)
    run(digits, tmp_path / "b", epochs=2)
    first = json.loads((tmp_path / "b" / "summary.json").read_text())["fit_seconds"]
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["corel"]["fit_seconds"] = 1000.0  # marks the first session's seconds
    torch.save(ckpt, tmp_path / "b" / "checkpoints" / "last.ckpt")
    resumed = run(digits, tmp_path / "b", epochs=3, resume=True)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    # the run's seconds count every session (the summary counted the last one only)
    assert 0 < first < 1000 < json.loads((tmp_path / "b" / "summary.json").read_text())["fit_seconds"] < 1000 + 60


def test_an_interruption_raises_keyboard_interrupt_and_resumes(tmp_path, digits, monkeypatch, caplog):
    """Lightning answers Ctrl-C with sys.exit(1) and ignores SIGINT from then on; train() raises
    KeyboardInterrupt with the handler it found, says where it stopped, and the run resumes."""
    step = ConnectivityAutoencoder.training_step

    def interrupted_in_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ConnectivityAutoencoder, "training_step", interrupted_in_second_epoch)
    handler = signal.getsignal(signal.SIGINT)
    with caplog.at_level(logging.WARNING, logger="corel"), pytest.raises(KeyboardInterrupt):
        run(digits, tmp_path / "run", epochs=3)
    assert signal.getsignal(signal.SIGINT) is handler
    assert "interrupted in epoch 2 (epoch 1 is kept)" in caplog.text
    monkeypatch.undo()
    resumed = run(digits, tmp_path / "run", epochs=3, resume=True)
    straight = run(digits, tmp_path / "straight", epochs=3)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("backend", ENGINES[1:])
def test_every_h0_engine_trains_the_same_backbone_and_a_resume_may_switch(tmp_path, digits, backend):
    """The engines give the same deaths bit for bit, so the weights match; the engine is no setting."""
    straight = run(digits, tmp_path / "native", epochs=3, h0_backend="native")
    other = run(digits, tmp_path / backend, epochs=2, h0_backend=backend)
    resumed = run(digits, tmp_path / backend, epochs=3, resume=True, h0_backend="native")
    assert other.info["epochs_completed"] == 2
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_compiled_loss_trains_the_eager_backbone_and_a_resume_may_switch(tmp_path, digits, monkeypatch):
    """compile_loss: the same trees (Borůvka traced into the graph); its sums may round otherwise,
    so the weights agree closely, not bit for bit; a resume may switch it off."""
    modes = []
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: modes.append(kwargs.get("mode")) or compile_(fn, **kwargs))
    eager = run(digits, tmp_path / "eager", epochs=3)
    assert modes == []
    run(digits, tmp_path / "compiled", epochs=2, compile_loss=True)
    assert modes == ["reduce-overhead"]  # once, at the first step
    compiled = run(digits, tmp_path / "compiled", epochs=3, resume=True)
    for (k, a), (_, b) in zip(eager.model.state_dict().items(), compiled.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    with pytest.raises(ValueError, match="compile_loss needs an H0 engine torch.compile can trace"):
        run(digits, tmp_path / "native", epochs=1, h0_backend="native", compile_loss=True)
    assert not (tmp_path / "native").exists()


def test_a_module_with_a_compiled_loss_pickles():
    """--strategy ddp_spawn pickles the module: the compiled function is made again where it runs."""
    import pickle

    module = ConnectivityAutoencoder(CFG.to_dict(), eta=1.0, lam=1.0, compile_loss=True)
    module._deaths_and_loss(torch.randn(5, 6))  # compiles (on the CPU, without CUDA graphs)
    copy = pickle.loads(pickle.dumps(module))
    assert copy.compile_loss and copy._compiled is None
    torch.testing.assert_close(copy._deaths_and_loss(torch.ones(3, 6))[1], module._deaths_and_loss(torch.ones(3, 6))[1])


def test_an_h0_engine_that_cannot_run_is_refused_before_any_work(tmp_path, digits, monkeypatch):
    pytest.importorskip("triton")
    from corel.topology import fused

    monkeypatch.setattr(fused, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="backend 'triton' needs a CUDA device"):
        run(digits, tmp_path / "run", epochs=1, h0_backend="triton")
    assert not (tmp_path / "run").exists()


def test_existing_run_and_corrupt_checkpoint(tmp_path, digits):
    run(digits, tmp_path, epochs=1)
    with pytest.raises(FileExistsError, match="resume"):
        run(digits, tmp_path, epochs=2)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        run(digits, tmp_path, epochs=2, resume=True)


def test_backbone_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Backbone.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        Backbone.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("kwargs, message", [({"batch_size": 1}, "batch size"), ({"eta": 0}, "eta"),
                                             ({"epochs": 0}, "epochs"), ({"lam": -1}, "lambda"),
                                             ({"seed": -1}, "seed"), ({"seed": 2 ** 32}, "seed")])
def test_bad_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_death_statistics():
    s = death_statistics(torch.tensor([1.0, 2.0, 2.1, 3.0]), eta=2.0)
    assert s["min"] == 1 and s["max"] == 3 and s["near_eta"] == 0.5 and s["mean"] == pytest.approx(2.025)


def test_backbone_from_checkpoint_matches_final_backbone(tmp_path, digits):
    backbone = run(digits, tmp_path, epochs=2)
    from_ckpt = backbone_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert from_ckpt.info["epochs_completed"] == 2 and from_ckpt.eta == 1.0
    torch.testing.assert_close(from_ckpt.encode(digits[:5]), backbone.encode(digits[:5]))


# ----------------------------------------------------------------------------- safety of run folders


class Exploit:
    """Unpickling this runs a shell command (the classic __reduce__ payload)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_checkpoint_payload_never_runs(tmp_path, digits):
    marker = tmp_path / "pwned"
    run(digits, tmp_path / "run", epochs=1)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    torch.save({"epoch": 0, "state_dict": {}, "hyper_parameters": Exploit(marker)}, last)
    with pytest.raises(ValueError, match="corrupt, truncated or not a corel file"):
        run(digits, tmp_path / "run", epochs=2, resume=True)
    with pytest.raises(ValueError, match="corrupt, truncated or not a corel file"):
        backbone_from_checkpoint(last)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--backbone", str(last), "--data", "digits", "--out", str(tmp_path / "e")])
    assert exit_info.value.code == 2 and not marker.exists()
    # Lightning's own resume path goes through the same loader
    with pytest.raises(ValueError, match="corrupt"):
        AtomicCheckpointIO().load_checkpoint(last)
    assert not marker.exists()


@pytest.mark.parametrize("change, named", [({"lam": 2.0}, "train.lam: 1.0 -> 2.0"), ({"eta": 3.0}, "train.eta"),
                                           ({"lr": 0.01}, "train.lr"), ({"seed": 4}, "train.seed"),
                                           ({"batch_size": 50}, "train.batch_size")])
def test_resume_with_other_settings_is_refused(tmp_path, digits, change, named):
    run(digits, tmp_path, epochs=1)
    before = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    settings = {"epochs": 2, "batch_size": 40, "eta": 1.0, "lam": 1.0, "seed": 3, **change}
    with pytest.raises(ValueError, match=f"other settings.*{re.escape(named)}"):
        train(digits, tmp_path, CFG, TrainConfig(**settings), resume=True, accelerator="cpu", devices=1,
              progress=False)
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_with_another_architecture_or_data_is_refused(tmp_path, digits):
    run(digits, tmp_path, epochs=1)
    wider = AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(32,), branches=3, branch_dim=3)
    with pytest.raises(ValueError, match=r"model\.branches: 2 -> 3"):
        train(digits, tmp_path, wider, TrainConfig(epochs=2, batch_size=40, eta=1.0, lam=1.0, seed=3), resume=True,
              accelerator="cpu", devices=1, progress=False)
    with pytest.raises(ValueError, match=r"data\.digest"):
        run(digits[::-1].copy(), tmp_path, epochs=2, resume=True)


def test_checkpoints_are_written_beside_their_target_with_normal_permissions(tmp_path, digits, monkeypatch):
    replaced = []
    real_replace = os.replace

    def recording_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    run(digits, tmp_path / "run", epochs=2)
    checkpoints = [(src, dst) for src, dst in replaced if dst.suffix == ".ckpt"]
    assert len(checkpoints) == 2 and all(src.parent == dst.parent for src, dst in checkpoints)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoints/last.ckpt", "backbone.pt", "summary.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_moved_run_folder_resumes_from_its_newest_checkpoint(tmp_path, digits):
    straight = run(digits, tmp_path / "a", epochs=3)
    run(digits, tmp_path / "b", epochs=2)
    (tmp_path / "b").rename(tmp_path / "moved")
    resumed = run(digits, tmp_path / "moved", epochs=3, resume=True)
    assert sorted(p.name for p in (tmp_path / "moved" / "checkpoints").iterdir()) == ["last.ckpt"]
    assert json.loads((tmp_path / "moved" / "summary.json").read_text())["epochs_completed"] == 3
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_finished_runs_are_never_overwritten(tmp_path, digits, caplog):
    run(digits, tmp_path, epochs=1)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="corel"):
        again = run(digits, tmp_path, epochs=1, resume=True)
    assert "nothing to do" in caplog.text
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    assert again.fingerprint == Backbone.load(tmp_path / "backbone.pt").fingerprint
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(FileExistsError, match="already holds a run"):
        run(digits, tmp_path, epochs=1)
    assert run(digits, tmp_path, epochs=1, resume=True).fingerprint == again.fingerprint  # nothing to do
    with pytest.raises(ValueError, match="no checkpoint to continue it"):
        run(digits, tmp_path, epochs=2, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "checkpoints" not in p.parts} == \
        {p: b for p, b in files.items() if "checkpoints" not in p.parts}


def test_more_epochs_than_asked_is_refused(tmp_path, digits):
    run(digits, tmp_path, epochs=2)
    (tmp_path / "summary.json").unlink()
    (tmp_path / "backbone.pt").unlink()
    with pytest.raises(ValueError, match="already trained 2 epochs, more than the 1"):
        run(digits, tmp_path, epochs=1, resume=True)
    # killed between the last checkpoint and the final files: resuming writes them, trains nothing
    backbone = run(digits, tmp_path, epochs=2, resume=True)
    assert Backbone.load(tmp_path / "backbone.pt").fingerprint == backbone.fingerprint
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_completed"] == 2
    # killed after backbone.pt, before summary.json (the last final file): a resume still writes it
    (tmp_path / "summary.json").unlink()
    assert run(digits, tmp_path, epochs=2, resume=True).fingerprint == backbone.fingerprint
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_completed"] == 2


# ----------------------------------------------------------------------------- several devices


def test_devices_see_full_batches_of_distinct_samples():
    from torch.utils.data import BatchSampler

    from corel.experiments.training import EpochShuffleSampler

    single = list(EpochShuffleSampler(103, seed=5))
    for world in (1, 2, 3):
        batches = [list(BatchSampler(EpochShuffleSampler(103, seed=5, rank=r, world_size=world), 10, drop_last=True))
                   for r in range(world)]
        assert len({len(b) for b in batches}) == 1  # every device takes the same number of steps
        seen = [i for rank in batches for batch in rank for i in batch]
        assert all(len(batch) == 10 for rank in batches for batch in rank)
        assert len(seen) == len(set(seen)) == (103 // world // 10) * 10 * world
        assert set(seen) <= set(single[: 103 // world * world])  # one permutation, split across devices
    assert list(EpochShuffleSampler(103, seed=5, rank=0, world_size=1)) == single


def test_a_resume_on_another_number_of_devices_is_refused(tmp_path, digits):
    run(digits, tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"started on 1 device\(s\) \(devices x nodes\), not 2; resuming would mix"):
        train(digits, tmp_path, CFG, TrainConfig(epochs=2, batch_size=40, eta=1.0, lam=1.0, seed=3), resume=True,
              accelerator="cpu", devices=2, progress=False)
    assert run(digits, tmp_path, epochs=2, resume=True)  # on the one device it had, it continues


def test_ddp_on_two_cpu_processes(tmp_path):
    """`corel train --devices 2` (gloo): both processes train on their own full batches."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "corel.experiments.cli", "train", "--data", "digits", "--accelerator",
                           "cpu", "--devices", "2", "--epochs", "2", "--batch-size", "50", "--out", str(out),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("backbone in") == 1  # printed once, by rank 0
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(r.split(",")[header.index("step")]) for r in rows[1:]]
    assert steps == [9, 19]  # 1078 digits / 2 devices / 50 per batch = 10 full batches per epoch
    assert json.loads((out / "summary.json").read_text())["epochs_completed"] == 2
    Backbone.load(out / "backbone.pt")


def test_divergence_is_reported_at_the_epoch_end_and_keeps_the_last_checkpoint(tmp_path, digits, monkeypatch):
    """The connectivity loss runs unchecked in training (no host synchronisation per step); codes
    that turn NaN in epoch 2 stop the run there with a clear error, and epoch 1's checkpoint stays."""
    from corel.detection.models import BranchedAutoencoder

    forward, calls = BranchedAutoencoder.forward, []

    def diverging(self, x):
        z, recon = forward(self, x)
        calls.append(1)
        return (z * math.nan, recon) if len(calls) > 10 else (z, recon)  # 10 batches an epoch

    monkeypatch.setattr(BranchedAutoencoder, "forward", diverging)
    with pytest.raises(ValueError, match="training diverged: the loss was NaN or inf in 10 of 10 batches of epoch 1"):
        run(digits, tmp_path, epochs=3)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batches_are_gathered_on_the_gpu_without_waiting_for_it():
    from corel.experiments.training import _InMemoryImages

    images = _InMemoryImages(torch.arange(500 * 12, dtype=torch.uint8).reshape(500, 3, 2, 2).cuda())
    images.__getitems__(list(range(10)))  # the pinned allocator's first block
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = images.__getitems__([4, 2, 499])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(batch.cpu(), images.images[[4, 2, 499]].cpu())
