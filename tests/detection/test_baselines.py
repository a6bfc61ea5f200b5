import itertools

import numpy as np
import pytest
import scipy.stats
from scipy.special import digamma
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from corel.detection.baselines import BASELINES, DSEBM, GEOM, OCSVMCAE, DeepSVDD
from corel.detection.images import as_image_tensor
from corel.detection.baselines.dagmm import gmm_parameters, sample_energy
from corel.detection.baselines.dsebm import EnergyModel
from corel.detection.baselines.geom import TRANSFORMATIONS, fit_dirichlet, transform, transform_all

SIDE = 8
# tiny settings per method: a second or two on two cores
FAST = {
    "ocsvm_cae": dict(epochs=15, batch_size=16),
    "deep_svdd": dict(pretrain_epochs=10, epochs=10, batch_size=16, lr=1e-3),
    "dagmm": dict(epochs=15, batch_size=16),
    "dsebm": dict(epochs=30, batch_size=24, lr=1e-2),
    "geom": dict(net="small", epochs=2, batch_size=64),  # shift: a quarter of the side, 2 pixels
}


def oriented_images(n: int, rng: np.random.Generator, upside_down: bool = False) -> np.ndarray:
    """uint8 (n, 3, SIDE, SIDE): a colour gradient with a bright square in the top-left corner, plus
    noise; ``upside_down`` flips them vertically (a different "class" that only orientation tells apart)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    x = np.stack([xx, yy, 1 - xx])[None] * rng.uniform(0.5, 0.9, (n, 3, 1, 1))
    x[:, :, :3, :3] = 1.0
    x = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    if upside_down:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x * 255).round().astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks gain nothing from a second thread, and on a busy machine OpenMP's waiting
    threads slow them down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    train = oriented_images(24, rng)
    test = np.concatenate([oriented_images(16, rng), oriented_images(16, rng, upside_down=True)])
    labels = np.r_[np.ones(16), np.zeros(16)]
    return train, test, labels


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_separates_a_clear_problem(name, problem):
    train, test, labels = problem
    scores = BASELINES[name](**FAST[name]).fit(train).score_samples(test)
    assert scores.shape == (len(test),) and scores.dtype == np.float64 and np.isfinite(scores).all()
    assert roc_auc_score(labels, scores) > 0.8


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_deterministic_given_the_seed(name, problem):
    train, test, _ = problem
    params = {**FAST[name], "epochs": 1, **({"pretrain_epochs": 1} if name == "deep_svdd" else {})}
    first, again, other = (BASELINES[name](**params, seed=s).fit(train[:8]).score_samples(test[:8]) for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_float_and_uint8_inputs_agree(problem):
    train, test, _ = problem
    a = BASELINES["dagmm"](epochs=1, batch_size=16).fit(train).score_samples(test)
    b = BASELINES["dagmm"](epochs=1, batch_size=16).fit(train / 255.0).score_samples(torch.from_numpy(test / 255.0))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_seeding_leaves_the_global_rng_alone(problem):
    train, _, _ = problem
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DSEBM(epochs=1, batch_size=16).fit(train)
    torch.testing.assert_close(torch.rand(3), expected)


def test_deep_svdd_centre_keeps_away_from_zero(problem):
    train, _, _ = problem
    detector = DeepSVDD(pretrain_epochs=1, epochs=1, batch_size=16, eps=0.1).fit(train)
    assert detector.center_.shape == (128,)
    assert (detector.center_.abs() >= 0.1).all()


def test_ocsvm_uses_a_given_encoder(problem):
    train, test, labels = problem
    seen = []

    def top_half_brightness(x: torch.Tensor) -> torch.Tensor:  # separates the upright from the flipped
        seen.append(x)
        return torch.stack([x[:, :, : SIDE // 2].mean(dim=(1, 2, 3)), x[:, :, SIDE // 2:].mean(dim=(1, 2, 3))], dim=1)

    detector = OCSVMCAE(encoder=top_half_brightness).fit(train)
    assert not hasattr(detector.encoder_, "parameters")  # no autoencoder was trained
    assert seen[0].min() >= 0 and seen[0].max() <= 1  # the encoder sees [0, 1] images
    assert roc_auc_score(labels, detector.score_samples(test)) > 0.95


def test_dsebm_energy_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = EnergyModel((1, 8, 8), code_dim=4).double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    grad = model.energy_gradient(x)
    for idx in [(0, 0, 3, 4), (1, 0, 7, 0)]:
        e = torch.zeros_like(x)
        e[idx] = 1e-6
        numeric = (model(x + e) - model(x - e))[idx[0]] / 2e-6
        assert grad[idx].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_dagmm_energy_is_the_mixture_negative_log_density():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.standard_normal((50, 3)))
    gamma = torch.softmax(torch.from_numpy(rng.standard_normal((50, 2))), dim=1)
    phi, mu, sigma = gmm_parameters(z, gamma, jitter=1e-3)
    w = gamma.numpy()
    for k in range(2):
        mean = (w[:, k:k + 1] * z.numpy()).sum(0) / w[:, k].sum()
        cov = np.cov(z.numpy().T, aweights=w[:, k], bias=True) + 1e-3 * np.eye(3)
        np.testing.assert_allclose(mu[k].numpy(), mean, rtol=1e-10)
        np.testing.assert_allclose(sigma[k].numpy(), cov, rtol=1e-10, atol=1e-12)
    density = sum(phi[k].item() * scipy.stats.multivariate_normal(mu[k].numpy(), sigma[k].numpy()).pdf(z.numpy())
                  for k in range(2))
    np.testing.assert_allclose(sample_energy(z, phi, mu, sigma).numpy(), -np.log(density), rtol=1e-10)
    # a covariance that is not positive definite (a diverged training's codes): a ValueError in words
    with pytest.raises(ValueError, match="not positive definite.*diverge"):
        sample_energy(z, phi, mu, sigma - 10 * torch.eye(3, dtype=sigma.dtype))


# ---- GEOM's transformations and Dirichlet --------------------------------------------------------

def reference_transform(image: np.ndarray, flip: bool, tx: int, ty: int, k: int) -> np.ndarray:
    """numpy oracle on one (C, S, S) image: flip, shift with half-sample-symmetric border, rotate."""
    x = image[:, :, ::-1] if flip else image
    s = max(abs(tx), abs(ty))
    padded = np.pad(x, ((0, 0), (s, s), (s, s)), mode="symmetric")
    side = x.shape[1]
    x = padded[:, s - ty: s - ty + side, s - tx: s - tx + side]
    return np.rot90(x, k, axes=(1, 2))


def test_the_72_transformations_are_the_published_set():
    assert len(TRANSFORMATIONS) == 72
    assert set(TRANSFORMATIONS) == set(itertools.product((False, True), (0, -1, 1), (0, -1, 1), range(4)))
    assert TRANSFORMATIONS[0] == (False, 0, 0, 0)


def test_transformations_match_an_independent_oracle_and_are_distinct():
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    all_t = transform_all(image, shift=8)[0]
    assert all_t.shape == (72, 3, 32, 32)
    for i, (flip, tx, ty, k) in enumerate(TRANSFORMATIONS):
        expected = reference_transform(image[0].numpy(), flip, 8 * tx, 8 * ty, k)
        np.testing.assert_array_equal(all_t[i].numpy(), expected)
    flat = all_t.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(72) * 1e9).min() > 0  # pairwise distinct


def test_transformations_invert_on_the_interior():
    image = torch.rand(1, 3, 32, 32)
    for i, (flip, tx, ty, k) in enumerate(TRANSFORMATIONS):
        y = transform(image, torch.tensor([i]), shift=8)
        back = torch.rot90(y, -k, dims=(-2, -1))
        if tx or ty:  # translations lose the border: undo, then compare the interior only
            undo = TRANSFORMATIONS.index((False, -tx, -ty, 0))
            back = transform(back, torch.tensor([undo]), shift=8)
        if flip:
            back = back.flip(-1)
        region = (slice(None), slice(None), slice(8, 24), slice(8, 24)) if (tx or ty) else (slice(None),) * 4
        torch.testing.assert_close(back[region], image[region], rtol=0, atol=0)


def test_dirichlet_fit_recovers_known_concentrations():
    rng = np.random.default_rng(0)
    alpha = np.array([0.3, 2.0, 5.0, 0.8])
    samples = rng.dirichlet(alpha, size=20000)
    fitted = fit_dirichlet(np.log(samples))
    np.testing.assert_allclose(fitted, alpha, rtol=0.05)
    # the maximum-likelihood condition: digamma(sum alpha) - digamma(alpha_k) + mean log p_k = 0
    stationarity = digamma(fitted.sum()) - digamma(fitted) + np.log(samples).mean(axis=0)
    np.testing.assert_allclose(stationarity, 0, atol=1e-10)
    batched = fit_dirichlet(np.log(np.stack([samples, samples[::-1]], axis=1)))  # (N, 2, K): two fits
    np.testing.assert_allclose(batched, np.stack([fitted, fitted]), rtol=1e-9)


def test_geom_simple_score_is_the_sum_of_correct_log_probabilities(problem):
    train, test, labels = problem
    detector = GEOM(**{**FAST["geom"], "score": "simple"}).fit(train)
    assert detector.shift_ == SIDE // 4
    log_p = detector._log_probs(as_image_tensor(test[:3])).double()
    expected = sum(log_p[:, t, t] for t in range(72))
    np.testing.assert_allclose(detector.score_samples(test[:3]), expected.numpy(), rtol=1e-12)
    assert roc_auc_score(labels, detector.score_samples(test)) > 0.8


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 8, 8), np.uint8), "shape"),
    (np.zeros((0, 3, 8, 8), np.uint8), "no images"),
    (np.full((4, 3, 8, 8), np.nan, np.float32), "NaN"),
    (np.full((4, 3, 8, 8), 255.0, np.float32), r"\[0, 1\]"),
    (np.zeros((4, 3, 8, 8), np.int64), "uint8"),
    (np.zeros((1, 3, 8, 8), np.uint8), "at least 2"),
])
def test_bad_training_images_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        BASELINES["dagmm"](epochs=1).fit(bad)


def test_scoring_checks_fit_and_shape(problem):
    train, test, _ = problem
    detector = DSEBM(epochs=1, batch_size=16)
    with pytest.raises(NotFittedError):
        detector.score_samples(test)
    detector.fit(train)
    with pytest.raises(ValueError, match="shape"):
        detector.score_samples(np.zeros((2, 3, 16, 16), np.uint8))


@pytest.mark.parametrize("name, params, message", [
    ("geom", {"net": "resnet"}, "unknown network"),
    ("geom", {"score": "max"}, "score"),
    ("geom", {"shift": 8}, "shift"),
    ("dsebm", {"score": "max"}, "score"),
    ("ocsvm_cae", {"nu": 0.0}, "nu"),
    ("deep_svdd", {"epochs": 0}, "epochs"),
    ("dagmm", {"components": 0}, "components"),
])
def test_bad_parameters_are_rejected(name, params, message, problem):
    with pytest.raises(ValueError, match=message):
        BASELINES[name](**params).fit(problem[0])


def test_geom_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        GEOM(net="small", epochs=1).fit(np.zeros((4, 3, 8, 16), np.uint8))


def test_a_failed_refit_leaves_the_fitted_detector_as_it_was(problem):
    """The input shape was set before the parameters were checked: a refit on 16x16 images with bad
    epochs left input_shape_ at 16x16 beside the 8x8 network, so the 8x8 test images were refused."""
    train, test, _ = problem
    detector = DSEBM(epochs=1, batch_size=16).fit(train)
    before, offset = detector.score_samples(test), detector.offset_
    detector.set_params(epochs=0)
    with pytest.raises(ValueError, match="epochs"):
        detector.fit(np.zeros((4, 3, 16, 16), np.uint8))
    assert detector.input_shape_ == (3, SIDE, SIDE) and detector.offset_ == offset
    assert np.array_equal(detector.score_samples(test), before)


@pytest.mark.parametrize("name, fitted, changes", [
    ("dsebm", {"score": "energy"}, [{"score": "reconstruction"}, {"score": "max"}]),
    ("geom", {"score": "simple"}, [{"score": "dirichlet"}]),
    ("ocsvm_cae", {}, [{"encoder": lambda x: x.mean(dim=(2, 3))}]),
    ("dagmm", {}, [{"latent_dim": 3}]),
])
def test_scores_follow_the_fitted_parameters(name, fitted, changes, problem):
    """Parameters were read at scoring time: set_params after fit silently switched DSEBM's score (an
    invalid name gave the reconstruction score), made GEOM's "simple" fit raise AttributeError, fed
    the trained CAE [0, 1] instead of [-1, 1] images and split DAGMM's (z, memberships) columns at
    the wrong place."""
    train, test, _ = problem
    detector = BASELINES[name](**{**FAST[name], "epochs": 1}, **fitted).fit(train)
    before = detector.score_samples(test)
    for params in changes:
        detector.set_params(**params)
        assert np.array_equal(detector.score_samples(test), before)


@pytest.mark.parametrize("params, message", [
    ({"epochs": 1.5}, "epochs must be a positive int"),
    ({"epochs": "3"}, "epochs must be a positive int"),
    ({"batch_size": True}, "batch_size must be an int >= 2"),
    ({"lr": "0.1"}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),  # trained to NaN, refused only after the training
    ({"noise_std": -1}, "noise_std must be a finite number >= 0"),
    ({"noise_std": float("inf")}, "noise_std must be a finite number >= 0"),
    ({"seed": None}, "seed must be an int"),
    ({"seed": 1.5}, "seed must be an int"),
    ({"seed": 2 ** 64}, "seed must be an int"),
])
def test_parameter_types_are_checked(params, message, problem):
    """Floats, text and None crashed with TypeErrors from range(), a comparison or torch."""
    with pytest.raises(ValueError, match=message):
        DSEBM(**{**FAST["dsebm"], **params}).fit(problem[0])


def test_a_numpy_seed_is_the_same_seed(problem):
    """torch.Generator.manual_seed refused numpy integers (TypeError)."""
    train, test, _ = problem
    params = {**FAST["dsebm"], "epochs": 2}
    want = DSEBM(**params, seed=3).fit(train).score_samples(test)
    assert np.array_equal(DSEBM(**params, seed=np.int64(3)).fit(train).score_samples(test), want)
    assert np.array_equal(DSEBM(**{**params, "epochs": np.int64(2)}, seed=3).fit(train).score_samples(test), want)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_batch_size_one_is_refused(name, problem):
    """Batches of one sample are dropped (batch norm), so batch_size=1 trained nothing: the scores
    of 3 epochs equalled those of an untrained network."""
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        BASELINES[name](**{**FAST[name], "batch_size": 1}).fit(problem[0])
