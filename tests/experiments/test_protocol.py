"""The protocol harness: stored cells, resuming, partial reports, test subsets, per-cell seeds."""

import csv
import json

import numpy as np
import pytest

from corel.detection.detector import OneClassDetector
from corel.experiments.protocol import CellStore, ProtocolResult, cell_seed, draw_indices, evaluate, stratified_subset
from corel.experiments.reports import protocol_markdown, write_protocol


def _codes(spread: float = 3.0, shape: tuple[int, int] = (2, 3), per_class: int = 30):
    """Codes of 3 classes around random centres: x_train, y_train (per_class each), x_test, y_test (20 each)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, spread, size=(3, *shape))
    y_train, y_test = np.repeat(np.arange(3), per_class), np.repeat(np.arange(3), 20)
    x_train = (centres[y_train] + rng.normal(size=(3 * per_class, *shape))).astype(np.float32)
    x_test = (centres[y_test] + rng.normal(size=(60, *shape))).astype(np.float32)
    return x_train, y_train, x_test, y_test


class Recorder:
    """A detector factory that remembers the seeds (cells) it was asked for."""

    def __init__(self):
        self.seeds = []

    def __call__(self, seed):
        self.seeds.append(seed)
        return OneClassDetector(None, radius=2.0, branches=2)


def test_stored_cells_are_reused_and_equal_a_fresh_run(tmp_path):
    data = _codes()
    fresh = evaluate(Recorder(), *data, n=10, draws=2, progress=False)
    first = Recorder()
    # a run killed after class 0: only its cells exist
    evaluate(first, *data, n=10, draws=2, classes=[0], cells_dir=tmp_path, progress=False)
    assert len(first.seeds) == 2 and len(list(tmp_path.glob("class0_draw*.json"))) == 2
    resumed = Recorder()
    result = evaluate(resumed, *data, n=10, draws=2, cells_dir=tmp_path, progress=False)
    assert len(resumed.seeds) == 4  # classes 1 and 2 only
    np.testing.assert_array_equal(result.auroc, fresh.auroc)
    assert result.seconds > 0


def test_cells_from_other_settings_are_refused(tmp_path):
    data = _codes()
    evaluate(Recorder(), *data, n=10, draws=1, classes=[0], cells_dir=tmp_path, settings={"radius": 2.0},
             progress=False)
    with pytest.raises(ValueError, match=r"other settings \(n: 10 -> 12\)"):
        evaluate(Recorder(), *data, n=12, draws=1, classes=[0], cells_dir=tmp_path, settings={"radius": 2.0},
                 progress=False)
    with pytest.raises(ValueError, match=r"other settings \(radius: 2.0 -> 3.0\)"):
        evaluate(Recorder(), *data, n=10, draws=1, classes=[0], cells_dir=tmp_path, settings={"radius": 3.0},
                 progress=False)
    (tmp_path / "class0_draw0.json").write_text("{trunc")
    with pytest.raises(ValueError, match="corrupt"):
        evaluate(Recorder(), *data, n=10, draws=1, cells_dir=tmp_path, settings={"radius": 2.0}, progress=False)


def test_report_only_leaves_missing_cells_out(tmp_path):
    data = _codes()
    evaluate(Recorder(), *data, n=10, draws=2, classes=[1], cells_dir=tmp_path, progress=False)
    idle = Recorder()
    result = evaluate(idle, *data, n=10, draws=2, cells_dir=tmp_path, compute=False, progress=False)
    assert idle.seeds == []
    assert result.finished.tolist() == [False, True, False]
    assert result.mean == pytest.approx(result.auroc[1].mean())
    assert "1 of 3 classes" in protocol_markdown(result) and "not run" in protocol_markdown(result)
    paths = write_protocol(result, tmp_path / "report")
    assert json.loads(paths[1].read_text())["classes"][0]["auroc_mean"] is None
    rows = list(csv.reader(paths[0].read_text().splitlines()))
    assert rows[1] == ["0", "", "", ""] and rows[2][1] == f"{result.auroc[1].mean():.4f}"  # empty: not computed
    nothing = evaluate(idle, *data, n=10, draws=2, classes=[0, 2], cells_dir=tmp_path, compute=False, progress=False)
    for path in write_protocol(nothing, tmp_path / "none")[:3]:
        assert "nan" not in path.read_text().lower(), path.name
    assert "| **mean** (0 of 2 classes) | - |" in protocol_markdown(nothing)
    # a report from a folder with no cells yet leaves no key behind that would refuse the real run
    evaluate(idle, *data, n=10, draws=1, seed=7, cells_dir=tmp_path / "fresh", compute=False, progress=False)
    assert not (tmp_path / "fresh").exists()
    evaluate(Recorder(), *data, n=10, draws=1, classes=[0], cells_dir=tmp_path / "fresh", progress=False)


def test_cell_seeds_differ_between_draws_and_classes():
    recorder = Recorder()
    evaluate(recorder, *_codes(), n=10, draws=3, progress=False)
    assert len(set(recorder.seeds)) == 9
    assert recorder.seeds[0] == cell_seed(0, 0, 0) and cell_seed(0, 0, 0) != cell_seed(1, 0, 0)


def test_stratified_subset_is_fixed():
    y = np.repeat(np.arange(4), [100, 100, 100, 700])
    idx = stratified_subset(y, 100, seed=3)
    assert np.array_equal(idx, stratified_subset(y, 100, seed=3)) and len(set(idx)) == len(idx)
    assert np.bincount(y[idx]).tolist() == [10, 10, 10, 70]
    assert len(stratified_subset(y, None)) == len(stratified_subset(y, 5000)) == 1000
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        stratified_subset(y, 3)


def test_evaluation_on_a_test_subset():
    x_train, y_train, x_test, y_test = _codes()
    result = evaluate(Recorder(), x_train, y_train, x_test, y_test, n=10, draws=1, test_size=30, progress=False)
    assert result.settings["test_size"] == 30


def test_cells_of_another_test_subset_of_the_same_size_are_refused(tmp_path):
    data = _codes()
    assert len(stratified_subset(data[3], 6)) == len(stratified_subset(data[3], 7)) == 6  # other samples, as many
    evaluate(Recorder(), *data, n=10, draws=1, classes=[0], test_size=6, cells_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings.*test_subset"):
        evaluate(Recorder(), *data, n=10, draws=1, classes=[1], test_size=7, cells_dir=tmp_path, progress=False)


def test_cell_store_writes_its_key(tmp_path):
    CellStore(tmp_path, {"method": "m", "n": (1, 2)})
    CellStore(tmp_path, {"method": "m", "n": (1, 2)})  # tuples read back as lists: the same key
    assert json.loads((tmp_path / "key.json").read_text())["n"] == [1, 2]


def test_protocol_on_synthetic_data_with_known_answer():
    x_train, y_train, x_test, y_test = _codes(spread=10.0, shape=(4, 5), per_class=50)
    result = evaluate(lambda _seed: OneClassDetector(None, radius=4.0, branches=4), x_train, y_train, x_test, y_test,
                      n=20, draws=2, progress=False)
    assert result.auroc.shape == (3, 2) and result.mean > 99
    a, b = draw_indices(y_train, 1, 20, 0), draw_indices(y_train, 1, 20, 0)
    assert np.array_equal(a, b) and (y_train[a] == 1).all() and len(set(a)) == 20
    assert not np.array_equal(a, draw_indices(y_train, 1, 20, 1))
    with pytest.raises(ValueError, match="fewer"):
        draw_indices(y_train, 1, 51, 0)


def test_protocol_report_files(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 10)
    x = rng.normal(size=(20, 2, 2)).astype(np.float32)
    result = evaluate(lambda _seed: OneClassDetector(None, radius=1.0, branches=2), x, y, x, y, n=5, draws=1, progress=False)
    for path in write_protocol(result, tmp_path):
        assert path.stat().st_size > 0


def test_comparison_std_covers_the_classes_of_its_mean(tmp_path):
    from corel.experiments.reports import write_comparison

    data = _codes()
    full = evaluate(Recorder(), *data, n=10, draws=3, progress=False, method="a")
    part = ProtocolResult("b", "", 10, 0, full.class_names, full.auroc.copy())
    part.auroc[2] = np.nan  # b finished classes 0 and 1 only
    write_comparison({"a": full, "b": part}, tmp_path / "cmp")
    rows = list(csv.DictReader((tmp_path / "cmp.csv").read_text().splitlines()))
    brute = full.auroc[:2].mean(axis=0).std(ddof=1)  # std over draws of the mean over classes 0 and 1
    assert [float(r["std_over_draws"]) for r in rows] == [pytest.approx(brute, abs=5e-5)] * 2
    assert [float(r["mean"]) for r in rows] == [pytest.approx(full.per_class[:2].mean(), abs=5e-5)] * 2


def test_cells_of_an_older_corel_are_kept_by_the_way_the_refusal_names(tmp_path):
    """A key written before data_digest and test_subset were recorded is refused (nothing can be
    checked), but the message says how to keep the cells, and doing so reuses them."""
    data = _codes()
    evaluate(Recorder(), *data, n=10, draws=1, classes=[0], data_digest="d1", cells_dir=tmp_path, progress=False)
    key = json.loads((tmp_path / "key.json").read_text())
    (tmp_path / "key.json").write_text(json.dumps({k: v for k, v in key.items()
                                                   if k not in ("data_digest", "test_subset")}))
    with pytest.raises(ValueError, match=r"older corel \(before 0.3\), which did not record test_subset, data_digest") as refused:
        evaluate(Recorder(), *data, n=10, draws=1, classes=[0], data_digest="d1", cells_dir=tmp_path, progress=False)
    fragment = str(refused.value).split("keep them by adding ")[1].split(" to its key.json")[0]
    (tmp_path / "key.json").write_text(json.dumps({**json.loads((tmp_path / "key.json").read_text()),
                                                   **json.loads("{" + fragment + "}")}))
    again = Recorder()
    evaluate(again, *data, n=10, draws=1, classes=[0], data_digest="d1", cells_dir=tmp_path, progress=False)
    assert again.seeds == []  # the stored cell is taken
    with pytest.raises(ValueError, match=r"other settings \(data_digest: 'd1' -> 'd2'\)"):  # a known difference
        evaluate(Recorder(), *data, n=10, draws=1, classes=[0], data_digest="d2", cells_dir=tmp_path, progress=False)
