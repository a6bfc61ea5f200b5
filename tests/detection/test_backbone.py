"""The backbone and detector files: round trips, checksums, damage and foreign content."""

import numpy as np
import pytest
import torch

from corel.detection.backbone import Backbone
from corel.detection.detector import OneClassDetector
from corel.detection.models import AutoencoderConfig, BranchedAutoencoder

CFG = AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(16,), branches=2, branch_dim=3)


@pytest.fixture
def backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone(BranchedAutoencoder(CFG).eval(), eta=1.5, metric="l1", info={"note": "test"})


def _flip_a_weight_byte(path, tensor: torch.Tensor) -> None:
    """Changes one byte inside the stored bytes of ``tensor``: the container stays valid."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    data[at + len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path, backbone):
    backbone.save(tmp_path / "b.pt")
    loaded = Backbone.load(tmp_path / "b.pt")
    assert loaded.fingerprint == backbone.fingerprint and loaded.eta == 1.5 and loaded.info == {"note": "test"}
    x = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    torch.testing.assert_close(loaded.encode(x), backbone.encode(x))


def test_changed_bytes_inside_a_backbone_are_refused(tmp_path, backbone):
    backbone.save(tmp_path / "b.pt")
    torch.load(tmp_path / "b.pt", weights_only=True)  # still a valid container after the flip below
    _flip_a_weight_byte(tmp_path / "b.pt", backbone.model.to_latent.weight)
    assert torch.load(tmp_path / "b.pt", weights_only=True)  # torch alone loads the changed weights
    with pytest.raises(ValueError, match="damaged"):
        Backbone.load(tmp_path / "b.pt")


@pytest.mark.parametrize("keep", [0, 10, 200, 1000, -20])
def test_truncated_files_give_a_value_error(tmp_path, backbone, keep):
    backbone.save(tmp_path / "b.pt")
    data = (tmp_path / "b.pt").read_bytes()
    (tmp_path / "b.pt").write_bytes(data[:keep])
    with pytest.raises(ValueError, match="corrupt|damaged"):
        Backbone.load(tmp_path / "b.pt")


def test_foreign_and_future_files(tmp_path, backbone):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a corel backbone file"):
        Backbone.load(tmp_path / "foreign.pt")
    torch.save({"format": "corel-backbone", "version": 1, "config": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format version 1; this corel reads version 2 only: corel 0.1 wrote it.*last.ckpt"):
        Backbone.load(tmp_path / "old.pt")
    with pytest.raises(FileNotFoundError):
        Backbone.load(tmp_path / "missing.pt")


def _fitted(backbone=None) -> OneClassDetector:
    codes = np.random.default_rng(0).normal(size=(20, 2, 3)).astype(np.float32)
    if backbone is None:
        return OneClassDetector(None, radius=1.0, branches=2).fit(codes)
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    return OneClassDetector(backbone).fit(images)


def test_detector_round_trip_and_damage(tmp_path, backbone):
    det = _fitted(backbone)
    det.save(tmp_path / "d.corel")
    loaded = OneClassDetector.load(tmp_path / "d.corel")
    x = np.random.default_rng(1).integers(0, 256, (7, 1, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.score_samples(x), det.score_samples(x))
    assert loaded.offset_ == det.offset_
    _flip_a_weight_byte(tmp_path / "d.corel", det.codes_)
    with pytest.raises(ValueError, match="damaged"):
        OneClassDetector.load(tmp_path / "d.corel")


@pytest.mark.parametrize("field, value, message", [
    ("radius", 0.0, "radius must be a finite number > 0"), ("radius", float("nan"), "radius"),
    ("codes", torch.full((3, 2, 3), float("nan")), "finite"), ("codes", torch.zeros(0, 2, 3), "finite"),
    ("offset", float("inf"), "offset"), ("metric", "manhattan-ish", "unknown metric"),
])
def test_a_loaded_detector_is_validated(tmp_path, field, value, message):
    from corel._io import load_checked, save_checked
    from corel.detection.detector import FORMAT, VERSION

    _fitted().save(tmp_path / "d.corel")
    content = load_checked(tmp_path / "d.corel", format=FORMAT, version=VERSION, what="detector")
    content[field] = value
    save_checked(content, tmp_path / "bad.corel", format=FORMAT, version=VERSION)  # a valid checksum
    with pytest.raises(ValueError, match=message):
        OneClassDetector.load(tmp_path / "bad.corel")
    del content[field]
    save_checked(content, tmp_path / "bad.corel", format=FORMAT, version=VERSION)
    with pytest.raises(ValueError, match="not a valid detector file"):
        OneClassDetector.load(tmp_path / "bad.corel")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_loaded_detector_encodes_on_its_device(tmp_path, backbone):
    """Loaded backbones are on the CPU, but a detector loaded for device="cuda" sent its images to
    the GPU: a device mismatch at scoring.  (GPU scores are compared with the GPU's: CPU and GPU
    convolutions round differently, so counts at the radius may differ between them.)"""
    x = np.random.default_rng(0).integers(0, 256, (12, 1, 8, 8), dtype=np.uint8)
    fitted = OneClassDetector(backbone, device="cuda").fit(x)
    fitted.save(tmp_path / "d.pt")
    on_gpu = OneClassDetector.load(tmp_path / "d.pt", device="cuda")
    assert np.array_equal(on_gpu.score_samples(x), fitted.score_samples(x))
    assert OneClassDetector.load(tmp_path / "d.pt").score_samples(x).shape == (12,)  # the CPU, by default


@pytest.mark.parametrize("config", [{"branches": 0}, {"filters": []}, {"negative_slope": "x"}])
def test_a_backbone_file_with_an_impossible_architecture_is_refused(tmp_path, backbone, config):
    """Content that passes the checksum (written by another tool, or the checksum recomputed) but
    describes no network: ZeroDivisionError and IndexError escaped, a text slope loaded."""
    from corel._io import content_digest

    backbone.save(tmp_path / "b.pt")
    blob = torch.load(tmp_path / "b.pt", weights_only=True)
    blob["payload"]["config"].update(config)
    blob["checksum"] = content_digest(blob["payload"])
    torch.save(blob, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="b.pt does not hold a valid backbone"):
        Backbone.load(tmp_path / "b.pt")


def test_a_detector_file_with_a_bad_metric_is_refused_naming_it(tmp_path):
    from corel._io import content_digest

    OneClassDetector(None).fit(np.zeros((3, 16, 10), np.float32)).save(tmp_path / "d.pt")
    blob = torch.load(tmp_path / "d.pt", weights_only=True)
    blob["payload"]["metric"] = "cosine"
    blob["checksum"] = content_digest(blob["payload"])
    torch.save(blob, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="d.pt: the detector's metric: unknown metric 'cosine'"):
        OneClassDetector.load(tmp_path / "d.pt")


def test_a_backbone_with_nan_weights_is_named_as_the_cause(backbone):
    """The NaN codes of a diverged backbone were reported as NaN "queries"."""
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    with torch.no_grad():
        backbone.model.to_latent.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="the backbone's encoding of these images contains NaN"):
        OneClassDetector(backbone).fit(x)


def test_numpy_values_survive_a_round_trip(tmp_path, backbone):
    """Parameters and metadata from numpy (np.float64(0.1) from a grid, np.int64 sizes, arrays) were
    written, checksummed, and then refused on load as "not plain data": a saved detector that could
    never be read back.  Now they are stored as Python numbers and tensors."""
    x = np.random.default_rng(0).integers(0, 256, (12, 1, 8, 8), dtype=np.uint8)
    backbone.info = {"loss": np.float64(0.5), "epochs": np.int64(3), "lams": np.array([1.0, 2.0]), "name": np.str_("a")}
    det = OneClassDetector(backbone, radius=np.float64(1.5), contamination=np.float64(0.1), metric=np.float64(3.0),
                           batch_size=np.int64(5)).fit(x)
    det.save(tmp_path / "d.pt")
    loaded = OneClassDetector.load(tmp_path / "d.pt")
    assert np.array_equal(loaded.score_samples(x), det.score_samples(x)) and loaded.offset_ == det.offset_
    assert loaded.get_params(deep=False)["contamination"] == 0.1 and type(loaded.contamination) is float
    info = loaded.backbone_.info
    assert info["loss"] == 0.5 and info["epochs"] == 3 and info["name"] == "a"
    assert torch.equal(info["lams"], torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_content_that_would_not_load_is_not_written(tmp_path, backbone):
    """A str subclass passed the checksum (isinstance) but torch.load(weights_only=True) refuses its
    class: such a file is refused before anything is written."""
    class Name(str):
        pass

    backbone.info = {"name": Name("a")}
    with pytest.raises(TypeError, match="cannot checksum a Name"):
        backbone.save(tmp_path / "b.pt")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind, shape", [("mlp", (1, 8, 8)), ("conv", (1, 8, 8))])
def test_numpy_sizes_build_a_backbone_that_saves_and_loads(tmp_path, kind, shape):
    """Sizes from numpy (a grid of layouts) were refused by BranchedAutoencoder's own int check,
    while every other size check of corel (check_ints) takes numpy integers."""
    n = np.int64
    cfg = AutoencoderConfig(kind=kind, input_shape=tuple(map(n, shape)), filters=(n(4),), branches=n(2),
                            branch_dim=n(3))
    torch.manual_seed(0)
    backbone = Backbone(BranchedAutoencoder(cfg).eval())
    backbone.save(tmp_path / "b.pt")
    loaded = Backbone.load(tmp_path / "b.pt")
    assert loaded.config == cfg and type(loaded.config.branches) is int
    x = np.random.default_rng(0).integers(0, 256, (5, *shape), dtype=np.uint8)
    assert loaded.encode(x).shape == (5, 2, 3) and torch.equal(loaded.encode(x), backbone.encode(x))
