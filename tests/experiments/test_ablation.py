"""corel ablate: the grid, its report, resuming, and several processes sharing one folder."""

import json
import os
import socket
import subprocess
import sys

import pytest

from corel.detection.backbone import Backbone
from corel.detection.detector import OneClassDetector
from corel.experiments import ablation
from corel.experiments.ablation import Layout, ablate
from corel.experiments.datasets import load_dataset
from corel.experiments.training import TrainConfig
from corel.experiments.workflows import default_model_config, evaluate_backbone

GRID = dict(layouts=[Layout(2, 3), Layout(4, 2)], lams=[0.0, 1.0], radii=(0.5, 1.0, 2.0), ns=(20, 40), draws=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run(data, out, **overrides):
    settings = {**GRID, **overrides}
    return ablate(data, out, model_config=default_model_config(data), config=TrainConfig(epochs=2, batch_size=50, eta=1.0),
                  progress=False, accelerator="cpu", devices=1, **settings)


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "locks" not in p.parts}


def test_grid_report_and_a_rerun_that_does_nothing(tmp_path, digits, monkeypatch):
    report = run(digits, tmp_path).read_text()
    assert "| 2x3 |" in report and "| 4x2 |" in report and "lambda 0 | lambda 1" in report and "Partial" not in report
    assert "## Radius sweep (n = 20)" in report and "radius 0.5" in report and "## Sample-count sweep" in report
    csv = (tmp_path / "ablation_digits.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 * (2 + 2)  # 4 backbones x (n = 20, 40 at eta; radii 0.5, 2 at n = 20)
    for chart in ("lambda", "radius", "n"):
        assert (tmp_path / f"ablation_digits_{chart}.png").stat().st_size > 0
    before = _files(tmp_path / "backbones")

    def no_fit(*args, **kwargs):
        raise AssertionError("a detector was fitted again")

    monkeypatch.setattr(OneClassDetector, "fit", no_fit)
    assert run(digits, tmp_path).read_text() == report
    assert _files(tmp_path / "backbones") == before  # no backbone retrained or rewritten


def test_killed_evaluations_resume_from_their_cells(tmp_path, digits, monkeypatch):
    run(digits, tmp_path, lams=[1.0], layouts=[Layout(2, 3)], radii=())
    finished = tmp_path / "evaluations" / "digits_2x3_lam1" / "r1" / "auroc_digits_n40.json"
    finished.unlink()  # killed after the last cell, before the report

    def no_fit(*args, **kwargs):
        raise AssertionError("a stored cell was computed again")

    monkeypatch.setattr(OneClassDetector, "fit", no_fit)
    run(digits, tmp_path, lams=[1.0], layouts=[Layout(2, 3)], radii=())
    assert finished.exists()


def test_processes_share_the_grid_through_locks(tmp_path, digits):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        held = tmp_path / "locks" / "digits_4x2_lam1.train.lock"
        held.parent.mkdir(parents=True)
        held.write_text(f"{socket.gethostname()} {sleeper.pid}")  # another live process is training it
        stale = tmp_path / "locks" / "digits_2x3_lam0.train.lock"
        stale.write_text(f"{socket.gethostname()} {2 ** 22 + 12345}")  # its process is gone
        report = run(digits, tmp_path).read_text()
        assert not (tmp_path / "backbones" / "digits_4x2_lam1").exists() and held.exists()
        assert (tmp_path / "backbones" / "digits_2x3_lam0" / "backbone.pt").exists() and not stale.exists()
        assert "Partial: 1 of 4 cells" in report
    finally:
        sleeper.kill()
        sleeper.wait()
    report = run(digits, tmp_path).read_text()  # the lock's process died: the cell is trained now
    assert "Partial" not in report and (tmp_path / "backbones" / "digits_4x2_lam1" / "backbone.pt").exists()


def test_layouts_and_cli_errors(capsys):
    from corel.experiments.cli import main

    assert Layout.parse(" 16 x 10 ") == Layout(16, 10) and str(Layout(1, 160)) == "1x160"
    for bad in ("16", "0x10", "16x", "axb"):
        with pytest.raises(ValueError, match="layout"):
            Layout.parse(bad)
    for argv, message in ((["--layout", "16by10"], "--layout: a layout is"), (["--lam", "1,x"], "--lam: expected"),
                          (["--radius", "0"], "--radius: expected numbers > 0")):
        with pytest.raises(SystemExit):
            main(["ablate", "--data", "digits", "--out", "x", *argv])
        assert message in capsys.readouterr().err
    assert ablation.reference_n((10, 120, 500)) == 120 and ablation.reference_n((10, 50)) == 10


def test_a_rerun_with_other_draws_or_seed_is_not_taken_as_done(tmp_path, digits):
    grid = dict(lams=[1.0], layouts=[Layout(2, 3)], radii=(), ns=(20,))
    run(digits, tmp_path, **grid)
    run(digits, tmp_path, **grid, draws=2)  # the stored draw is reused, the second one computed
    row = (tmp_path / "ablation_digits.csv").read_text().splitlines()[1].split(",")
    assert row[6] == "2"  # draws
    with pytest.raises(ValueError, match="other settings.*seed"):
        run(digits, tmp_path, **grid, draws=2, seed=1)
    # more epochs train the backbone on: the evaluations of its earlier weights are not reported as its own,
    # and their cells (of weights no longer anywhere) are replaced, not left to refuse the run for good
    ablate(digits, tmp_path, **{**GRID, **grid, "draws": 2}, model_config=default_model_config(digits),
           config=TrainConfig(epochs=3, batch_size=50, eta=1.0), progress=False, accelerator="cpu", devices=1)
    backbone = Backbone.load(tmp_path / "backbones" / "digits_2x3_lam1" / "backbone.pt")
    where = tmp_path / "evaluations" / "digits_2x3_lam1" / "r1"
    result = json.loads((where / "auroc_digits_n20.json").read_text())
    assert backbone.info["epochs_completed"] == 3 and result["settings"]["backbone_fingerprint"] == backbone.fingerprint
    assert json.loads((where / "cells_digits_n20" / "key.json").read_text())["backbone_fingerprint"] == \
        backbone.fingerprint
    fresh = evaluate_backbone(backbone, digits, ns=(20,), draws=2, progress=False)[20]
    assert result["mean"] == pytest.approx(fresh.mean)


def test_an_eta_of_many_digits_keeps_its_cell_in_the_table(tmp_path, digits):
    report = ablate(digits, tmp_path, [Layout(2, 3)], [1.0], model_config=default_model_config(digits),
                    config=TrainConfig(epochs=1, batch_size=50, eta=0.1234567), ns=(20,), draws=1, progress=False,
                    accelerator="cpu", devices=1).read_text()
    assert "| 2x3 |" in report and "Partial" not in report  # the folder r0.123457 holds radius 0.1234567 = eta


def test_locks_and_cell_keys_are_created_whole_and_once(tmp_path):
    import threading

    from corel._io import claim, create_exclusive
    from corel.experiments.protocol import CellStore

    barrier, won, failed = threading.Barrier(8), [], []

    def race(i):
        barrier.wait()
        if create_exclusive(tmp_path / "lock", f"writer {i}"):
            won.append(i)
        try:
            CellStore(tmp_path / "cells", {"seed": i})
        except ValueError:
            failed.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and (tmp_path / "lock").read_text() == f"writer {won[0]}"
    assert len(failed) == 7  # one key was written; every other process was refused, none mixed its cells in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "lock"]  # no temporary file left
    (tmp_path / "lock").unlink()
    with claim(tmp_path / "lock") as mine:  # a lock is never seen empty (an empty one was held for ever)
        assert mine and (tmp_path / "lock").read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not (tmp_path / "lock").exists()


def test_the_report_needs_only_the_evaluations(tmp_path, digits):
    grid = dict(lams=[1.0], layouts=[Layout(2, 3)], radii=(), ns=(20,))
    report = run(digits, tmp_path, **grid).read_text()
    (tmp_path / "backbones" / "digits_2x3_lam1" / "summary.json").unlink()  # being rewritten by another process
    assert ablation.write_report(tmp_path, "digits", 20).read_text() == report


def test_exclusive_creation_without_hard_links(tmp_path, monkeypatch):
    from corel._io import create_exclusive

    def no_links(*args):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    assert create_exclusive(tmp_path / "lock", "a") and not create_exclusive(tmp_path / "lock", "b")
    assert (tmp_path / "lock").read_text() == "a" and [p.name for p in tmp_path.iterdir()] == ["lock"]


def test_one_device_per_process(tmp_path, digits, monkeypatch):
    """Lightning's DDP reran the command per device and those processes skipped the claimed grid while
    the first waited for them for ever: several devices are refused before any work, "auto" is one."""
    for devices, nodes in ((2, 1), (-1, 1), ([0, 1], 1), (1, 2)):
        with pytest.raises(ValueError, match="one ablate per device on the same --out"):
            ablate(digits, tmp_path, model_config=default_model_config(digits), config=TrainConfig(epochs=1),
                   progress=False, devices=devices, num_nodes=nodes, **GRID)
        assert not tmp_path.exists() or not any(tmp_path.iterdir())
    trained = []
    monkeypatch.setattr(ablation, "train_backbone", lambda *args, **kwargs: trained.append(kwargs["devices"]))
    ablate(digits, tmp_path, model_config=default_model_config(digits), config=TrainConfig(epochs=1),
           progress=False, devices="auto", **{**GRID, "layouts": [Layout(2, 3)], "lams": [1.0]})
    assert trained == [1]
