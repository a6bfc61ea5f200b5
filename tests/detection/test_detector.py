import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from corel.detection.detector import OneClassDetector, count_within


def brute_force(q, c, radius, p):
    return (torch.linalg.vector_norm(q[:, None] - c[None], ord=p, dim=-1) <= radius).sum(dim=(1, 2))


@pytest.mark.parametrize("metric, p", [("l1", 1), ("l2", 2), ("linf", float("inf"))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counts_equal_brute_force_including_boundary(metric, p, dtype):
    g = torch.Generator().manual_seed(0)
    # integer codes: many points exactly at the radius, where <= must hold
    q = torch.randint(-3, 4, (300, 4, 3), generator=g).to(dtype)
    c = torch.randint(-3, 4, (70, 4, 3), generator=g).to(dtype)
    assert torch.equal(count_within(q, c, 2.0, metric), brute_force(q, c, 2.0, p))


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counts_off_the_cpu_equal_the_native_kernels(metric, dtype, monkeypatch):
    """The torch path of other devices (run here on CPU, in tiles of a few queries) compares what
    the native kernel compares.  At radii equal to distances between a query and a code, where a
    last bit decides, torch.cdist's l2 roots disagreed with the kernel's squared sums at 28 of 200
    radii in float32.  Another p agrees to rounding only (pow), so it is checked off the boundary."""
    from corel.detection import detector

    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(300, 4, 10, generator=g).to(dtype), torch.randn(60, 4, 10, generator=g).to(dtype)
    p = detector.metric_order(metric)
    monkeypatch.setattr(detector, "TILE_ELEMENTS", 7 * 4 * 60 * 16)  # 7 queries a tile (d padded to 16)
    compared = detector.compared_pairwise

    def within_a_tile(a, b, p):  # the fixed order pads d to a multiple of 8: tiles count the padding
        assert a.shape[0] * a.shape[1] * b.shape[1] * detector.padded_width(a.shape[2]) <= detector.TILE_ELEMENTS
        return compared(a, b, p)

    monkeypatch.setattr(detector, "compared_pairwise", within_a_tile)
    if p == 3.0:
        radii = torch.rand(20, generator=g).add(2.0).tolist()
    else:
        values = compared(q[:4, 0], c[:, 0], p).flatten()[:60].double()
        radii = (values.sqrt() if p == 2.0 else values).tolist()
    for radius in radii:
        assert torch.equal(detector.count_in_tiles(q, c, radius, p), count_within(q, c, radius, metric))


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
@pytest.mark.parametrize("scale", [2.0 ** 100, 2.0 ** -100])  # exact: the boundary cases stay on the boundary
def test_counts_at_extreme_scales(metric, scale):
    """Squares of 2**100 overflow float32 (inf <= inf counted every code) and those of 2**-100
    underflow (0 <= 0): queries, codes and radius are divided by one power of two first."""
    from corel.detection import detector

    g = torch.Generator().manual_seed(1)
    q, c = torch.randint(-3, 4, (50, 2, 3), generator=g).double(), torch.randint(-3, 4, (20, 2, 3), generator=g).double()
    want = brute_force(q, c, 2.0, detector.metric_order(metric))
    got = count_within((q * scale).float(), (c * scale).float(), 2.0 * scale, metric)
    assert torch.equal(got, want)
    for bad in (-1.0, math.nan, math.inf, "2"):
        with pytest.raises(ValueError, match="radius"):
            count_within(q, c, bad, metric)
    assert torch.equal(count_within(q, c, torch.tensor(0.0), metric), brute_force(q, c, 0.0, 1))  # duplicates


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
def test_counts_next_to_a_huge_code(metric):
    """Small codes one float32 ulp apart next to one code at 1e38: one scale taken from the largest
    coordinate made the small codes subnormal (11 counted where 5 are within).  A NaN has no
    distance: a ValueError."""
    from corel.detection import detector

    p = detector.metric_order(metric)
    line = [torch.tensor(0.1)]
    for _ in range(40):
        line.append(torch.nextafter(line[-1], torch.tensor(1.0)))
    c = torch.stack([torch.stack([v, torch.tensor(0.0)]) for v in line] + [torch.tensor([1e38, 0.0])])[:, None]
    q = torch.tensor([[[0.1, 0.0]]])
    for radius in (3e-8, 1e-7, 2.2e-7):
        want = (torch.linalg.vector_norm(q.double()[:, None] - c.double()[None], ord=p, dim=-1) <= radius).sum()
        assert count_within(q, c, radius, metric).item() == want.item()
    for where in ("queries", "codes"):
        with pytest.raises(ValueError, match=f"{where} contains NaN"):
            count_within(q * math.nan if where == "queries" else q, c * math.nan if where == "codes" else c, 1.0, metric)


def test_detector_contract_and_scores():
    rng = np.random.default_rng(0)
    inliers = rng.normal(0, 0.3, size=(60, 16, 10)).astype(np.float32)
    det = OneClassDetector(None, radius=2.0)
    assert not hasattr(det, "codes_")
    assert det.fit(inliers) is det
    assert det.codes_.shape == (60, 16, 10)
    test = np.concatenate([rng.normal(0, 0.3, size=(30, 16, 10)), rng.normal(3, 0.3, size=(30, 16, 10))]).astype(np.float32)
    scores = det.score_samples(test)
    assert torch.equal(torch.from_numpy(scores), brute_force(torch.from_numpy(test), det.codes_, 2.0, 1))
    assert roc_auc_score(np.r_[np.ones(30), np.zeros(30)], scores) > 0.99
    assert (det.predict(test[30:]) == -1).all()
    assert np.mean(det.predict(inliers) == 1) >= 0.9 - 1e-9  # contamination 0.1 of leave-one-out scores
    own = clone(det).fit_predict(inliers)  # the training samples' own predictions: leave-one-out, not self-counted
    assert np.array_equal(own, np.where(det.train_scores_ >= det.offset_, 1, -1)) and (own == -1).any()
    twin = clone(det)
    assert twin.get_params() == det.get_params() and not hasattr(twin, "codes_")


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(20, 160)).astype(np.float32)
    det = OneClassDetector(None, radius=5.0).fit(codes)
    det.save(tmp_path / "det.pt")
    again = OneClassDetector.load(tmp_path / "det.pt")
    test = rng.normal(size=(15, 160)).astype(np.float32)
    assert np.array_equal(again.score_samples(test), det.score_samples(test))
    assert again.offset_ == det.offset_
    assert np.array_equal(again.train_scores_, det.train_scores_)  # the fitted state is whole after a load
    older = det.to_dict()
    del older["train_scores"]  # a file written before they were stored: recomputed, the same
    assert np.array_equal(OneClassDetector.from_dict(older).train_scores_, det.train_scores_)
    assert np.array_equal(again.fit_predict(codes), det.fit_predict(codes))


def test_a_file_does_not_bind_the_device_it_was_fitted_on(tmp_path):
    """A detector fitted with device="cuda" was saved with it and could not score on a machine
    without a GPU; the device is where a process computes, chosen at load."""
    det = OneClassDetector(None, radius=5.0, device="cpu").fit(np.zeros((4, 16, 10), np.float32))
    det.set_params(device="cuda")  # as a fit on a GPU machine leaves it
    det.save(tmp_path / "det.pt")
    again = OneClassDetector.load(tmp_path / "det.pt")
    assert again.device is None and again.score_samples(np.zeros((2, 16, 10), np.float32)).tolist() == [64, 64]
    assert OneClassDetector.load(tmp_path / "det.pt", device="cpu").device == "cpu"


def test_bad_input():
    det = OneClassDetector(None)
    with pytest.raises(ValueError, match="N = 0"):
        det.fit(np.zeros((0, 16, 10), np.float32))
    with pytest.raises(ValueError, match="N = 0"):
        det.fit(np.zeros((0, 160), np.float32))  # flat codes: the split into branches must not crash
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        det.fit([[0.0] * 160])
    for bad in ({"batch_size": 0}, {"batch_size": -5}, {"chunk_size": 0}, {"branches": 0}):
        with pytest.raises(ValueError, match="must be a positive int"):
            OneClassDetector(None, **bad).fit(np.zeros((3, 16, 10), np.float32))
    for bad in (-0.1, 0.6, "auto"):
        with pytest.raises(ValueError, match="contamination"):
            OneClassDetector(None, contamination=bad).fit(np.zeros((3, 16, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        det.fit(np.full((3, 16, 10), np.nan, np.float32))
    with pytest.raises(ValueError, match="branches"):
        det.fit(np.zeros((3, 17), np.float32))
    det.fit(np.zeros((3, 16, 10), np.float32))
    with pytest.raises(ValueError, match="match"):
        det.score_samples(np.zeros((3, 16, 5), np.float32))


def test_a_failed_refit_leaves_the_fitted_detector_as_it_was():
    """The radius was set before the new codes were checked: after a refit that raised, the old codes
    and offset were scored with the new radius."""
    rng = np.random.default_rng(2)
    codes, test = rng.normal(size=(30, 4, 3)).astype(np.float32), rng.normal(size=(20, 4, 3)).astype(np.float32)
    det = OneClassDetector(None, radius=1.0).fit(codes)
    want = brute_force(torch.from_numpy(test), torch.from_numpy(codes), 1.0, 1).numpy()
    assert np.array_equal(det.score_samples(test), want)
    offset = det.offset_
    det.set_params(radius=5.0)
    with pytest.raises(ValueError, match="NaN"):
        det.fit(np.full((3, 4, 3), np.nan, np.float32))
    assert det.radius_ == 1.0 and det.offset_ == offset and np.array_equal(det.score_samples(test), want)
    with pytest.raises(ValueError, match="contamination"):
        OneClassDetector(None, contamination=0.7).fit(codes)
    fresh = OneClassDetector(None, contamination=0.7)
    with pytest.raises(ValueError, match="contamination"):
        fresh.fit(codes)
    assert not hasattr(fresh, "codes_")  # a first fit that failed leaves it unfitted


@pytest.mark.parametrize("fitted, queried", [(torch.float32, torch.float64), (torch.float16, torch.float32),
                                             (torch.bfloat16, torch.float64)])
def test_queries_are_not_rounded_to_the_codes_dtype(fitted, queried):
    """Queries were cast to the fitted codes' dtype first: a float64 query 2**-40 beyond the radius
    of a float32 code rounded onto it and counted.  The brute force compares the queries as given
    with the codes as stored, in float64; integers nudged by powers of two the query dtype holds
    keep every sum exact, so any rounding of the queries shows."""
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(-3, 4, (40, 2, 3), generator=g).to(fitted)
    tiny = 2.0 ** (-40 if queried == torch.float64 else -20)  # below the codes' precision, within the queries'
    nudge = torch.tensor([-2.0 ** -10, 2.0 ** -10, -tiny, tiny], dtype=torch.float64)
    nudge = nudge[torch.randint(0, 4, (300, 2, 3), generator=g)]
    queries = (torch.randint(-3, 4, (300, 2, 3), generator=g) + nudge).to(queried)
    det = OneClassDetector(None, radius=2.0, branches=2).fit(codes)
    for p, metric in ((1, "l1"), (2, "l2"), (float("inf"), "linf")):
        det.set_params(metric=metric).fit(codes)
        want = brute_force(queries.double(), codes.double(), 2.0, p).numpy()
        assert np.array_equal(det.score_samples(queries), want)


def test_flat_queries_split_into_the_fitted_branches():
    """Flat (N, D) queries were split into the ``branches`` parameter (16) even when the detector
    was fitted on (n, 4, 3) codes, so they were refused as not splitting into 16 branches."""
    rng = np.random.default_rng(4)
    codes, test = rng.normal(size=(30, 4, 3)).astype(np.float32), rng.normal(size=(20, 4, 3)).astype(np.float32)
    det = OneClassDetector(None, radius=2.0).fit(codes)
    assert np.array_equal(det.score_samples(test.reshape(20, 12)), det.score_samples(test))
    with pytest.raises(ValueError, match="does not split into 4 branches"):
        det.score_samples(np.zeros((2, 10), np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_codes_on_the_gpu():
    """Fitting on CUDA codes converted the counts to numpy on the GPU (TypeError), and CUDA queries
    met CPU codes in one torch operation."""
    g = torch.Generator().manual_seed(5)
    codes, test = torch.randn(30, 4, 3, generator=g), torch.randn(20, 4, 3, generator=g)
    want = brute_force(test, codes, 2.0, 1).numpy()
    on_gpu = OneClassDetector(None, radius=2.0).fit(codes.cuda())
    on_cpu = OneClassDetector(None, radius=2.0).fit(codes)
    for det in (on_gpu, on_cpu):
        assert np.array_equal(det.score_samples(test.cuda()), want) and np.array_equal(det.score_samples(test), want)
    assert np.array_equal(on_gpu.train_scores_, on_cpu.train_scores_)


def test_numpy_integer_parameters():
    """Sizes from numpy (a parameter grid) were refused as not being ints."""
    codes = np.random.default_rng(6).normal(size=(10, 16, 10)).astype(np.float32)
    det = OneClassDetector(None, branches=np.int64(16), chunk_size=np.int32(3), batch_size=np.int64(2)).fit(codes)
    assert np.array_equal(det.score_samples(codes), OneClassDetector(None).fit(codes).score_samples(codes))


def test_count_within_refuses_codes_of_another_layout():
    """The native kernel took K and d from the queries: codes (n, 4, 5) or flat (n, 12) against
    queries (M, 4, 3) were read in the wrong layout and counted, silently."""
    q = torch.zeros(5, 4, 3)
    for codes in (torch.zeros(7, 4, 5), torch.zeros(7, 2, 3), torch.zeros(7, 4, 1)):
        with pytest.raises(ValueError, match="differ in branches or dimension"):
            count_within(q, codes, 1.0)
    for queries, codes in ((q, torch.zeros(7, 12)), (torch.zeros(5, 12), torch.zeros(7, 12)), ([[0.0]], q)):
        with pytest.raises(ValueError, match="must be a real tensor"):
            count_within(queries, codes, 1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        count_within(q, q, 1.0, chunk_size=0)


def test_count_within_counts_mixed_dtypes_in_the_wider():
    """float64 codes were read in float32 when the queries were float32 (rounded across the radius)."""
    g = torch.Generator().manual_seed(7)
    codes = torch.randint(-3, 4, (40, 2, 3), generator=g).double() + 2.0 ** -40
    queries = torch.randint(-3, 4, (200, 2, 3), generator=g).float()
    for metric, p in (("l1", 1), ("l2", 2), ("linf", float("inf"))):
        want = brute_force(queries.double(), codes, 2.0, p)
        assert torch.equal(count_within(queries, codes, 2.0, metric), want)
        assert torch.equal(count_within(codes, queries, 2.0, metric), brute_force(codes, queries.double(), 2.0, p))


def test_threshold_ties_are_inliers():
    """The documented tie rule: leave-one-out counts tie at the quantile, and a score equal to
    offset_ is an inlier, so with more than a tenth of the samples isolated nothing is an outlier."""
    codes = np.zeros((20, 1, 1), np.float32)
    codes[:3] = np.array([100.0, 200.0, 300.0])[:, None, None]  # three isolated samples: LOO score 0
    det = OneClassDetector(None, radius=1.0, branches=1, contamination=0.1).fit(codes)
    assert np.array_equal(np.sort(det.train_scores_), [0] * 3 + [16] * 17) and det.offset_ == 0.0
    assert (det.fit_predict(codes) == 1).all() and det.predict(np.array([[[50.0]]], np.float32))[0] == 1
    det.set_params(contamination=0.15).fit(codes)  # quantile between 0 and 16: the isolated ones are outliers
    assert 0 < det.offset_ < 16 and np.array_equal(det.fit_predict(codes), np.where(det.train_scores_ == 0, -1, 1))


def test_non_finite_training_scores_are_refused():
    """A diverged baseline (DSEBM's reconstruction score at lr 1e6 gave NaN) set offset_ to NaN, and
    predict then called every sample an outlier without a word."""
    from corel.detection.base import BaseDetector

    class Diverged(BaseDetector):
        def __init__(self, contamination=0.1):
            self.contamination = contamination

        def _fit(self, X):
            return np.where(np.arange(len(X)) == 2, np.nan, 1.0)

        def _score_samples(self, X):
            return np.ones(len(X))

    det = Diverged()
    with pytest.raises(ValueError, match="Diverged: 1 of the 5 training samples' scores are NaN or inf"):
        det.fit(np.zeros(5))
    assert not hasattr(det, "offset_")


def test_codes_with_autograd_are_kept_detached():
    codes = torch.randn(10, 16, 10, requires_grad=True)
    det = OneClassDetector(None).fit(codes * 2)
    assert not det.codes_.requires_grad and det.codes_.grad_fn is None
