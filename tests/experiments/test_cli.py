import json

import numpy as np
import pytest
import torch

from corel.experiments.cli import main


NO_CUDA_HERE = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "digits", "--out", "x", "--eta", "0"], "--eta: must be > 0"),
    (["train", "--data", "digits", "--out", "x", "--batch-size", "1"], "--batch-size: must be >= 2"),
    (["train", "--data", "mnist", "--out", "x"], "invalid choice"),
    (["evaluate", "--backbone", "missing.pt", "--data", "digits", "--out", "x"], "backbone file not found"),
    (["train", "--data", "digits", "--out", "x", "--devices", "abc"], "--devices: expected 'auto', a count"),
    (["train", "--data", "digits", "--out", "x", "--devices", "0"], "--devices: the device count must be >= 1"),
    (["train", "--data", "digits", "--out", "x", "--metric", "hamming"], "--metric: unknown metric 'hamming'"),
    (["train", "--data", "digits", "--out", "x", "--metric", "0.5"], "--metric: metric order p must be >= 1"),
    (["train", "--data", "digits", "--out", "x", "--eta", "inf"], "--eta: must be a finite number"),
    (["train", "--data", "digits", "--out", "x", "--epochs", "x"], "--epochs: expected an integer"),
    (["train", "--data", "digits", "--out", "x", "--h0-backend", "cuda"], "--h0-backend: invalid choice: 'cuda'"),
    (["evaluate", "--backbone", "b.pt", "--data", "digits", "--out", "x", "--radius", "nan"], "--radius: must be a finite"),
    (["fit", "imgs", "--out", "."], "--out: . is a folder"),
    (["score", "m.corel", "imgs", "--out", "s.csv", "--report", "."], "--report: . is a folder"),
    (["fit", "imgs", "--out", "m.corel", "--device", "gpu0"], "--device: not a device"),
    (["fit", "imgs", "--out", "m.corel", "--device", "meta"], "--device: meta: corel encodes on cpu, cuda or mps"),
    (["train", "--data", "digits", "--out", "x", "--resume"], "nothing to resume in x"),
    (["train", "--data", "digits", "--out", "x", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["compare", "--data", "digits", "--out", "x", "--seed", "4294967296"], "--seed: must be < 2**32"),
    (["ablate", "--data", "digits", "--out", "README.md"], "--out: README.md is a file; give a folder"),
    (["ablate", "--data", "digits", "--out", "README.md/x", "-n", "20"],
     "corel ablate: error: [Errno 20] Not a directory"),
    (["compare", "--data", "digits", "--methods", "dagmm", "--classes", "12", "--out", "x"],
     "classes [12] have no training samples"),
    (["compare", "--data", "digits", "--methods", "dagmm", "--classes", "0,0,1", "--out", "x"],
     "classes must be distinct, got [0, 0, 1]"),
    (["compare", "--data", "digits", "--methods", "dagmm, svm", "--out", "x"], "unknown methods ['svm']"),
    # checked before any training (it came after every backbone of the grid was trained)
    (["ablate", "--data", "digits", "--out", "x", "-n", "20,105"],
     "class 8 has 104 training samples, fewer than n = 105"),
    (["ablate", "--data", "digits", "--out", "x", "-n", "2000"], "fewer than n = 2000 (9 other classes too)"),
    # devices that are not here: Lightning and torch failed with tracebacks (MisconfigurationException, AssertionError)
    pytest.param(["train", "--data", "digits", "--out", "x", "--accelerator", "gpu"],
                 "--accelerator: gpu: torch sees no GPU here", marks=NO_CUDA_HERE),
    pytest.param(["fit", "imgs", "--out", "m.corel", "--device", "cuda"],
                 "--device: cuda: torch sees 0 CUDA devices here", marks=NO_CUDA_HERE),
])
def test_bad_arguments_give_one_line_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_interruption_says_how_to_continue(monkeypatch, tmp_path, capsys):
    from corel.experiments import ablation, workflows

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflows, "demo", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path)])
    assert exit_info.value.code == 130 and "corel demo: interrupted" in capsys.readouterr().err
    monkeypatch.setattr(workflows, "analyze_backbone_densification", interrupted)
    with pytest.raises(SystemExit) as exit_info:  # keeps nothing: it must not promise to continue
        main(["analyze", "densification", "--backbone", "cifar10", "--data", "digits", "--out", str(tmp_path)])
    assert exit_info.value.code == 130 and capsys.readouterr().err == "corel analyze: interrupted\n"
    monkeypatch.setattr(ablation, "ablate", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--data", "digits", "--out", str(tmp_path)])
    assert exit_info.value.code == 130 and "kept in --out: run the same command" in capsys.readouterr().err
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning started for a second device: the first one speaks
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path)])
    assert exit_info.value.code == 130 and capsys.readouterr().err == ""


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs (default: 50)" in text and "never try to download" in text
    assert "--no-download never try to download (default" not in text  # a flag has no default to state
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: none)" in text and "(default: )" not in text  # --radius: an empty list
    assert "the first -n when 120 is not among them" in text and "latent units of --metric" in text


def test_metric_names_go_through_the_one_parser():
    from corel.experiments.cli import build_parser

    for text, metric in (("manhattan", "l1"), ("L2", "l2"), ("euclidean", "l2"), ("3", 3.0), ("inf", "linf")):
        args = build_parser().parse_args(["train", "--data", "digits", "--out", "x", "--metric", text])
        assert args.metric == metric


def test_demo_quick_then_evaluate(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lambda=1" in out and "lambda=0" in out and "mean AUROC" in out
    assert (tmp_path / "auroc_digits.png").stat().st_size > 0
    report = json.loads((tmp_path / "lambda1" / "auroc_digits_n40.json").read_text())
    assert len(report["classes"]) == 10 and report["mean"] > 80  # digits are easy; chance is 50
    assert main(["evaluate", "--backbone", str(tmp_path / "lambda1" / "backbone.pt"), "--data", "digits",
                 "-n", "30", "--draws", "2", "--out", str(tmp_path / "eval"), "--quiet", "--report"]) == 0
    assert (tmp_path / "eval" / "auroc_digits_n30.md").read_text().count("|") > 20
    page = (tmp_path / "eval" / "report_digits_3.html").read_text()  # one page per class, with labels
    assert "class 3 from 30 samples" in page and "AUROC" in page and "<script" not in page


def test_compare_on_identical_draws(tmp_path):
    from corel.experiments.datasets import ImageData, load_dataset
    from corel.experiments.workflows import compare, default_model_config
    from corel.experiments.training import TrainConfig, train

    data = load_dataset("digits")
    backbone = train(data.x_train, tmp_path / "bb", default_model_config(data, branches=4, branch_dim=3),
                     TrainConfig(epochs=2, batch_size=50, eta=1.0, lam=1.0), accelerator="cpu", devices=1,
                     progress=False)
    results = compare(["corel", "dagmm"], data, tmp_path, backbone=backbone, n=20, draws=1, classes=[0, 1],
                      small=True, progress=False)
    assert set(results) == {"corel", "dagmm"} and all(r.auroc.shape == (2, 1) for r in results.values())
    table = (tmp_path / "compare_digits_n20.md").read_text()
    assert "| corel |" in table and "| dagmm |" in table
    assert (tmp_path / "compare_digits_n20.png").stat().st_size > 0
    assert len(list((tmp_path / "dagmm" / "cells_digits_n20").glob("class*_draw0.json"))) == 2
    # report-only over three classes: nothing is computed, class 2 is left out of the means
    partial = compare(["corel", "dagmm"], data, tmp_path, backbone=backbone, n=20, draws=1, classes=[0, 1, 2],
                      small=True, compute=False, progress=False)
    np.testing.assert_array_equal(partial["dagmm"].auroc[:2], results["dagmm"].auroc)
    assert not partial["dagmm"].finished[2]
    table = (tmp_path / "compare_digits_n20.md").read_text()
    assert "the 2 of 3 classes every method finished" in table and f"| dagmm | {results['dagmm'].mean:.2f} |" in table
    with pytest.raises(ValueError, match="unknown methods"):
        compare(["corel", "svm"], data, tmp_path, backbone=backbone)
    # other data under the same name (another --data-dir of npz or imagefolder) is refused, not mixed in
    other = ImageData(data.name, data.x_train, data.y_train, data.x_test[::-1].copy(), data.y_test,
                      data.class_names)
    for method in ("corel", "dagmm"):
        with pytest.raises(ValueError, match="other settings.*data_digest"):
            compare([method], other, tmp_path, backbone=backbone, n=20, draws=1, classes=[0, 1], small=True,
                    progress=False)


def test_demo_and_reproduce_refuse_a_backbone_of_other_settings(tmp_path, monkeypatch, capsys):
    from corel.detection.backbone import Backbone
    from corel.experiments import workflows
    from corel.experiments.datasets import load_dataset

    digits = load_dataset("digits")  # a demo's run of seed 0 ...
    cfg = workflows.AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(256, 128), branches=8, branch_dim=4)
    workflows.train_backbone(digits, tmp_path / "demo" / "lambda1", cfg,
                             workflows.TrainConfig(epochs=1, batch_size=50, eta=1.0, lam=1.0, seed=0),
                             accelerator="cpu", devices=1, progress=False)
    with pytest.raises(SystemExit) as exit_info:  # ... is not taken for one of seed 1
        main(["demo", "--quick", "--seed", "1", "--out", str(tmp_path / "demo")])
    assert exit_info.value.code == 2 and "train.seed: 0 -> 1" in capsys.readouterr().err

    monkeypatch.setattr(workflows, "load_dataset", lambda *args, **kwargs: digits)  # cifar10's part played by digits
    argv = ["reproduce", "cifar10", "--out", str(tmp_path / "repro"), "--epochs", "1", "--batch-size", "50",
            "--branches", "2", "--branch-dim", "3", "--filters", "16", "-n", "20", "--draws", "1", "--quiet"]
    assert main(argv) == 0
    backbone = Backbone.load(tmp_path / "repro" / "backbone" / "backbone.pt")
    assert (backbone.config.branches, backbone.config.branch_dim, backbone.config.filters) == (2, 3, (16,))
    assert len(list((tmp_path / "repro").glob("cells_digits_n20/class*_draw0.json"))) == 10  # kept for a resume
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--lam", "10"])
    assert exit_info.value.code == 2 and "train.lam: 20.0 -> 10.0" in capsys.readouterr().err
    assert main(argv) == 0  # the same command again: the backbone and the cells are reused
    assert main([*argv, "--epochs", "2"]) == 0  # trained on: the cells of its earlier weights are replaced
    backbone = Backbone.load(tmp_path / "repro" / "backbone" / "backbone.pt")
    key = json.loads((tmp_path / "repro" / "cells_digits_n20" / "key.json").read_text())
    assert backbone.info["epochs_completed"] == 2 and key["backbone_fingerprint"] == backbone.fingerprint


def test_analyze_batch_size_prints_no_negative_death_time(capsys):
    assert main(["analyze", "batch-size", "--batch-size", "100000000"]) == 0
    out = capsys.readouterr().out
    assert "within +-4.810 eta, i.e. [0.000, 11.619]" in out  # a tolerance beyond 1 reaches down to 0, not below
