"""corel fit / corel score / the HTML report on generated image folders, with the shipped backbone."""

import csv
import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import corel
from corel._io import save_checked
from corel.detection.backbone import PRETRAINED, Backbone, pretrained, pretrained_path
from corel.experiments.cli import main
from corel.experiments.novelty import FORMAT, NoveltyModel, score


def _smooth(rng, size: int) -> np.ndarray:
    """A normal image: a smooth colour gradient (HWC uint8)."""
    ramp = np.linspace(0, 1, size)
    colour = rng.uniform(0.3, 1.0, 3)
    return (255 * np.clip(ramp[:, None, None] * colour + 0.1 * rng.random((1, 1, 3)), 0, 1) *
            np.ones((size, size, 3))).astype(np.uint8)


def _noise(rng, size: int) -> np.ndarray:
    """A novel image: coloured noise."""
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    normal, test = tmp_path / "normal", tmp_path / "test"
    normal.mkdir()
    (normal / "sub").mkdir()
    test.mkdir()
    for i in range(30):
        Image.fromarray(_smooth(rng, 32)).save(normal / ("sub" if i % 5 == 0 else "") / f"n{i:02d}.png")
    labels = ["path,label"]
    for i in range(12):
        image, label = (_smooth(rng, 32), "normal") if i % 2 else (_noise(rng, 32), "novel")
        name = f"t{i:02d}.png"
        Image.fromarray(image).save(test / name)
        labels.append(f"{test / name},{label}")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    return tmp_path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_score_and_report_from_the_command_line(folders, capsys):
    model, scores, report = folders / "model.corel", folders / "scores.csv", folders / "report.html"
    assert main(["fit", str(folders / "normal"), "--out", str(model), "--report", str(folders / "fit.html")]) == 0
    said = capsys.readouterr().out
    below = int((NoveltyModel.load(model).train_scores < NoveltyModel.load(model).detector.offset_).sum())
    assert "fitted on 30 images" in said and f"{below} of them ({below / 30:.1%}) score below" in said
    assert main(["score", str(model), str(folders / "test"), "--out", str(scores), "--report", str(report),
                 "--labels", str(folders / "labels.csv"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "12 images scored" in said and "AUROC x 100 against" in said
    rows = _rows(scores)
    assert [r["path"] for r in rows] == [str(p) for p in sorted((folders / "test").iterdir())]
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 13))
    threshold = NoveltyModel.load(model).detector.offset_
    for r in rows:
        assert r["prediction"] == ("normal" if float(r["score"]) >= threshold else "novel")
    most_novel = min(rows, key=lambda r: int(r["rank"]))
    assert float(most_novel["score"]) == min(float(r["score"]) for r in rows)
    page = report.read_text()
    assert "AUROC" in page and "most novel" in page and "fitted samples" in page
    # self-contained: every image inline, nothing fetched, no scripts
    assert "<script" not in page and "http" not in page.replace('lang="en"', "")
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    for suffix in ("histogram", "roc", "fitted", "novel", "normal"):
        assert (folders / f"report_{suffix}.png").stat().st_size > 0


def test_labels_are_read_without_guessing(folders, capsys, caplog, monkeypatch):
    """Labels by path relative to the CSV; by bare name only where one row has it (a name shared
    by several rows went to the last of them); 0 and true/false refused as ambiguous; scikit-learn's
    1 / -1 taken; the AUROC printed without a report too."""
    from corel.experiments.novelty import read_labels

    names = [str(p) for p in sorted((folders / "test").iterdir())]
    truth = read_labels(folders / "labels.csv", names)
    (folders / "meta").mkdir()
    rows = ["path,label"] + [f"elsewhere/{Path(n).name},{'1' if t else '-1'}" for n, t in zip(names, truth)]
    (folders / "meta" / "by_name.csv").write_text("\n".join(rows) + "\n")
    assert np.array_equal(read_labels(folders / "meta" / "by_name.csv", names), truth)  # unique names: matched
    rows.append(f"other/{Path(names[0]).name},normal")
    (folders / "meta" / "shared.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=f"2 rows are named {Path(names[0]).name}"):
        read_labels(folders / "meta" / "shared.csv", names)
    for ambiguous in ("0", "true"):
        (folders / "meta" / "bits.csv").write_text(f"path,label\n{names[0]},{ambiguous}\n")
        with pytest.raises(ValueError, match="ambiguous"):
            read_labels(folders / "meta" / "bits.csv", names)
    main(["fit", str(folders / "normal"), "--out", str(folders / "m.corel")])
    capsys.readouterr()
    assert main(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"),
                 "--labels", str(folders / "meta" / "by_name.csv"), "--quiet"]) == 0
    assert "AUROC x 100 against" in capsys.readouterr().out
    # Excel's "CSV UTF-8" (a byte-order mark) and a header in other case and spacing
    (folders / "meta" / "excel.csv").write_bytes("\ufeffPath, Label\r\n".encode() + "\r\n".join(
        f"elsewhere/{Path(n).name}, {'Normal' if t else 'NOVEL'}" for n, t in zip(names, truth)).encode("utf-8"))
    assert np.array_equal(read_labels(folders / "meta" / "excel.csv", names), truth)
    # every label alike: no ROC curve, but the scores stand (exit 0)
    (folders / "meta" / "same.csv").write_text("path,label\n" + "".join(f"{n},normal\n" for n in names))
    assert main(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"),
                 "--labels", str(folders / "meta" / "same.csv"), "--report", str(folders / "same.html"), "--quiet"]) == 0
    assert "undefined (every image has the same label)" in capsys.readouterr().out
    assert "no ROC curve" in (folders / "same.html").read_text()
    # the labels file doubles as a list of images (a header row, paths in its path column)
    assert len(corel.load_images(folders / "labels.csv")) == 12
    # scoring what was fitted (relative paths, from another working folder): each also counts itself
    monkeypatch.chdir(folders)
    main(["fit", "normal", "--out", "relative.corel"])
    monkeypatch.chdir(folders / "meta")
    with caplog.at_level(logging.WARNING, logger="corel"):
        main(["score", "../relative.corel", "../normal", "--out", "s.csv", "--quiet"])
    assert "30 of the scored images are ones the model was fitted on" in caplog.text


def test_python_api_gives_the_same_scores(folders):
    x = corel.load_images(folders / "normal")
    det = corel.OneClassDetector().fit(x)  # the shipped CIFAR-10 backbone by default
    assert det.backbone_.fingerprint == pretrained().fingerprint
    y, names = corel.load_images(folders / "test", return_names=True)
    scores = det.score_samples(y)
    page = corel.report.html(folders / "api.html", scores, det.offset_, names=names, images=y, fitted=x)
    assert page.exists()
    main(["fit", str(folders / "normal"), "--out", str(folders / "m.corel")])
    main(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"), "--quiet"])
    assert [float(r["score"]) for r in _rows(folders / "s.csv")] == scores.tolist()


def test_scoring_streams_in_chunks(folders):
    main(["fit", str(folders / "normal"), "--out", str(folders / "m.corel")])
    model = NoveltyModel.load(folders / "m.corel")
    whole = score(model, folders / "test", progress=False)
    chunked = score(model, folders / "test", chunk=5, keep=3, progress=False)
    assert chunked.names == whole.names and np.array_equal(chunked.scores, whole.scores)
    assert len(chunked.extremes) == 6
    order = np.argsort(whole.scores, kind="stable")
    assert set(order[:3]) <= set(chunked.extremes)  # the most novel are kept


def test_bad_inputs_get_clear_messages(folders, capsys, caplog):
    def fails(argv, message):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err

    (folders / "empty").mkdir()
    fails(["fit", str(folders / "empty"), "--out", str(folders / "m.corel")], "holds nothing: expected image files")
    (folders / "docs").mkdir()
    (folders / "docs" / "notes.txt").write_text("no images here")
    fails(["fit", str(folders / "docs"), "--out", str(folders / "m.corel")], "holds 1 files but no images")
    fails(["fit", str(folders / "nowhere"), "--out", str(folders / "m.corel")], "no such folder or file")
    # a corrupt file among good ones: listed, left out; fatal only with --strict
    (folders / "normal" / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING, logger="corel"):
        assert main(["fit", str(folders / "normal"), "--out", str(folders / "m.corel")]) == 0
    assert "1 images could not be read" in caplog.text and "broken.png" in caplog.text
    fails(["fit", str(folders / "normal"), "--out", str(folders / "m.corel"), "--strict"], "broken.png")
    shutil.copy(folders / "normal" / "broken.png", folders / "test" / "zz.png")
    assert main(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"),
                 "--quiet"]) == 0
    assert _rows(folders / "s.csv")[-1]["prediction"].startswith("unreadable")
    fails(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"), "--strict"],
          "zz.png")
    # tampered, foreign and other-version model files
    data = bytearray((folders / "m.corel").read_bytes())
    raw = np.ascontiguousarray(NoveltyModel.load(folders / "m.corel").thumbnails).tobytes()[:64]
    data[data.find(raw) + 10] ^= 0xFF
    (folders / "tampered.corel").write_bytes(bytes(data))
    fails(["score", str(folders / "tampered.corel"), str(folders / "test"), "--out", str(folders / "s.csv")],
          "damaged")
    save_checked({"anything": 1}, folders / "future.corel", format=FORMAT, version=99)
    fails(["score", str(folders / "future.corel"), str(folders / "test"), "--out", str(folders / "s.csv")],
          "format version 99; this corel reads version 1")
    fails(["score", str(pretrained_path("cifar10")), str(folders / "test"), "--out", str(folders / "s.csv")],
          "is not a corel model file")


def test_images_of_other_sizes_are_resized_and_said_once(tmp_path, caplog):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_smooth(rng, 32)).save(folder / "a.png")
    Image.fromarray(_smooth(rng, 64)[:, :48]).save(folder / "b.jpg", quality=95)
    Image.fromarray(_smooth(rng, 40)[..., 0]).save(folder / "c.bmp")  # grayscale
    with caplog.at_level(logging.INFO, logger="corel"):
        images, names = corel.load_images(folder, return_names=True)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    assert [Path(n).name for n in names] == ["a.png", "b.jpg", "c.bmp"]
    assert caplog.text.count("resized to 32x32") == 1
    np.savez(tmp_path / "imgs.npz", images=np.stack([_smooth(rng, 16)] * 4))  # HWC, another size
    assert corel.load_images(tmp_path / "imgs.npz").shape == (4, 3, 32, 32)
    (tmp_path / "list.txt").write_text("# two of them\nmixed/a.png\n\nmixed/c.bmp\n")
    assert corel.load_images(tmp_path / "list.txt").shape == (2, 3, 32, 32)


def test_sixteen_bit_and_rotated_images_decode_as_they_look(tmp_path):
    """A 16-bit greyscale PNG is scaled to 8 bits (PIL's convert clipped mid-grey to white); a JPEG
    whose EXIF says "rotated 90 degrees" is turned upright before its central square is taken."""
    grey = np.full((32, 32), 32768, np.uint16)
    grey[:, :16] = 4096
    for folder in ("grey", "phone"):
        (tmp_path / folder).mkdir()
    Image.fromarray(grey).save(tmp_path / "grey" / "grey16.png")
    assert Image.open(tmp_path / "grey" / "grey16.png").mode.startswith("I")
    images = corel.load_images(tmp_path / "grey")
    assert images[0, :, :, :16].max() == 16 and (images[0, :, :, 16:] == 128).all()

    wide = np.zeros((32, 64, 3), np.uint8)  # left half black, right half white, landscape
    wide[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    Image.fromarray(wide).save(tmp_path / "phone" / "phone.jpg", quality=95, exif=exif)
    upright = corel.load_images(tmp_path / "phone")[0]  # portrait 32 x 64: the left (black) half on top
    assert upright[:, :12].mean() < 15 and upright[:, 20:].mean() > 240  # unrotated: 127 in both


def test_the_shipped_backbone():
    path = pretrained_path("cifar10")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PRETRAINED["cifar10"]
    backbone = pretrained("cifar10")
    assert backbone.fingerprint == "18303aa2e7e8bb01" and backbone.eta == 2.0 and backbone.metric == "l1"
    assert backbone.info["train"]["lam"] == 20.0 and backbone.info["epochs_completed"] == 50
    codes = backbone.encode(np.zeros((2, 3, 32, 32), np.uint8))
    assert codes.shape == (2, 16, 10) and torch.isfinite(codes).all()
    with pytest.raises(ValueError, match="no pretrained backbone 'imagenet'"):
        pretrained("imagenet")


def test_a_damaged_shipped_backbone_is_refused(monkeypatch):
    monkeypatch.setitem(PRETRAINED, "cifar10", "0" * 64)
    with pytest.raises(ValueError, match="damaged.*reinstall"):
        Backbone.load(pretrained_path("cifar10"))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_report_renders_in_a_browser(folders, tmp_path):
    """Chromium loads the page: every image decodes and the console stays silent."""
    main(["fit", str(folders / "normal"), "--out", str(folders / "m.corel")])
    main(["score", str(folders / "m.corel"), str(folders / "test"), "--out", str(folders / "s.csv"), "--report",
          str(folders / "r.html"), "--labels", str(folders / "labels.csv"), "--quiet"])
    page = (folders / "r.html").read_text()
    probe = ("<script>window.addEventListener('load', () => { const all = [...document.images]; "
             "document.body.dataset.images = all.length; "
             "document.body.dataset.decoded = all.filter(i => i.complete && i.naturalWidth > 0).length; });</script>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"))  # the probe, not the report
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120)
    images = re.search(r'data-images="(\d+)"', done.stdout)
    decoded = re.search(r'data-decoded="(\d+)"', done.stdout)
    assert images and decoded, done.stderr[-2000:]
    assert int(images[1]) == page.count("<img ") > 20 and decoded[1] == images[1]
    assert "CONSOLE" not in done.stderr, [line for line in done.stderr.splitlines() if "CONSOLE" in line]


def test_score_csv_keeps_every_digit(tmp_path):
    from corel.experiments.novelty import Scored, write_scores
    from sklearn.metrics import roc_auc_score

    scores = np.array([1_234_567.0, 1_234_568.0, 3.0, 0.1 + 0.2])  # counts above a million, and any float
    write_scores(Scored(["a", "b", "c", "d"], scores, [], {}), 1_234_568.0, tmp_path / "s.csv")
    rows = _rows(tmp_path / "s.csv")
    assert [float(r["score"]) for r in rows] == scores.tolist()
    assert [r["prediction"] for r in rows] == ["novel", "normal", "novel", "novel"]
    labels = [True, True, False, False]  # an AUROC recomputed from the CSV is the one of the scores
    assert roc_auc_score(labels, [float(r["score"]) for r in rows]) == roc_auc_score(labels, scores)
