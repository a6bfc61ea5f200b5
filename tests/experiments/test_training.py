import json

import pytest
import torch

from corel.detection.backbone import Backbone
from corel.experiments.datasets import load_dataset
from corel.detection.models import AutoencoderConfig
from corel.experiments.training import ConnectivityAutoencoder, TrainConfig, death_statistics, train

CFG = AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(32,), branches=2, branch_dim=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").x_train[:400]


def run(images, out, epochs, resume=False, lam=1.0):
    return train(images, out, CFG, TrainConfig(epochs=epochs, batch_size=40, eta=1.0, lam=lam, seed=3),
                 resume=resume, accelerator="cpu", devices=1, progress=False)


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


def test_resume_equals_uninterrupted(tmp_path, digits):
    straight = run(digits, tmp_path / "a", epochs=3)
    run(digits, tmp_path / "b", epochs=2)
    resumed = run(digits, tmp_path / "b", epochs=3, resume=True)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


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
                                             ({"epochs": 0}, "epochs"), ({"lam": -1}, "lambda")])
def test_bad_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_death_statistics():
    s = death_statistics(torch.tensor([1.0, 2.0, 2.1, 3.0]), eta=2.0)
    assert s["min"] == 1 and s["max"] == 3 and s["near_eta"] == 0.5 and s["mean"] == pytest.approx(2.025)


def test_backbone_from_checkpoint_matches_final_backbone(tmp_path, digits):
    from corel.experiments.training import backbone_from_checkpoint

    backbone = run(digits, tmp_path, epochs=2)
    from_ckpt = backbone_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert from_ckpt.info["epochs_completed"] == 2 and from_ckpt.eta == 1.0
    torch.testing.assert_close(from_ckpt.encode(digits[:5]), backbone.encode(digits[:5]))
