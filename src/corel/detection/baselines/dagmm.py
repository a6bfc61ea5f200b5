"""Deep autoencoding Gaussian mixture model, DAGMM (Zong et al., ICLR 2018), in the image configuration
of Golan & El-Yaniv's comparison code (NeurIPS 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corel._checks import check_ints
from corel.detection.baselines._common import BaselineDetector, check_positive, in_batches, train
from corel.detection.baselines._networks import ConvDecoder, ConvEncoder, to_signed


class DAGMMNetwork(nn.Module):
    """Compression network (convolutional autoencoder with a linear ``latent_dim`` code) and estimation
    network (dense 64 tanh, dropout 0.5, dense 10 tanh, dropout 0.5, dense ``components`` softmax).

    forward: images (B, C, H, W) in [-1, 1] -> (reconstruction (B, C, H, W), z (B, latent_dim + 2),
    memberships (B, components)), where z is the code followed by the relative Euclidean distance
    ||x - x'|| / ||x|| and the cosine similarity of x and its reconstruction x'.
    """

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = 5, components: int = 3):
        super().__init__()
        self.z_dim = latent_dim + 2
        self.encoder = ConvEncoder(input_shape, latent_dim, None)
        self.decoder = ConvDecoder(input_shape, latent_dim)
        self.estimation = nn.Sequential(
            nn.Linear(latent_dim + 2, 64), nn.Tanh(), nn.Dropout(0.5),
            nn.Linear(64, 10), nn.Tanh(), nn.Dropout(0.5),
            nn.Linear(10, components), nn.Softmax(dim=1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        code = self.encoder(x)
        reconstruction = self.decoder(code)
        flat, flat_rec = x.flatten(1), reconstruction.flatten(1)
        relative_distance = (flat - flat_rec).norm(dim=1) / flat.norm(dim=1).clamp_min(1e-12)
        cosine = F.cosine_similarity(flat, flat_rec, dim=1)
        z = torch.cat([code, relative_distance[:, None], cosine[:, None]], dim=1)
        return reconstruction, z, self.estimation(z)


def gmm_parameters(z: Tensor, gamma: Tensor, jitter: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mixture weights phi (K,), means mu (K, D) and covariances sigma (K, D, D) from samples z (N, D)
    and soft memberships gamma (N, K); ``jitter`` is added to every covariance's diagonal."""
    weight = gamma.sum(dim=0)  # (K,)
    phi = weight / len(z)
    mu = gamma.T @ z / weight[:, None]
    centred = z[None] - mu[:, None]  # (K, N, D)
    sigma = torch.einsum("nk,kni,knj->kij", gamma, centred, centred) / weight[:, None, None]
    return phi, mu, sigma + jitter * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)


def sample_energy(z: Tensor, phi: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """-log sum_k phi_k N(z; mu_k, sigma_k) per sample: (N, D) -> (N,), via Cholesky and log-sum-exp."""
    chol, info = torch.linalg.cholesky_ex(sigma)  # (K, D, D); info (K,) > 0 where not positive definite
    if info.any():  # (the check torch.linalg.cholesky makes, with our words instead of a LinAlgError)
        raise ValueError("DAGMM: a mixture covariance is not positive definite (NaN or collapsed codes: did the "
                         "training diverge? try a lower lr or a larger jitter)")
    centred = (z[None] - mu[:, None]).transpose(1, 2)  # (K, D, N)
    whitened = torch.linalg.solve_triangular(chol, centred, upper=False)
    mahalanobis = whitened.pow(2).sum(dim=1)  # (K, N)
    log_det = 2 * chol.diagonal(dim1=1, dim2=2).log().sum(dim=1)  # (K,)
    log_normal = -0.5 * (mahalanobis + log_det[:, None] + z.shape[1] * math.log(2 * math.pi))
    return -torch.logsumexp(phi.clamp_min(1e-30).log()[:, None] + log_normal, dim=0)


class DAGMM(BaselineDetector):
    """DAGMM: reconstruction error + ``lambda_energy`` * mean sample energy + ``lambda_diag`` * sum of
    inverse covariance diagonals, the mixture estimated on every batch from the estimation network's
    memberships; images scaled to [-1, 1].

    After training the mixture (phi, mu, sigma) is estimated once on all class samples in eval mode, as
    the paper prescribes (the reference code kept the last training batch's estimate).
    Score: minus the sample energy; higher = more normal.  Defaults are the reference's: 5-d code,
    3 components, lambda_energy 0.01, lambda_diag 0.0005, covariance jitter 1e-3, Adam 1e-3, batch 256,
    200 epochs.
    """

    def __init__(
        self,
        latent_dim: int = 5,
        components: int = 3,
        lambda_energy: float = 0.01,
        lambda_diag: float = 0.0005,
        jitter: float = 1e-3,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        contamination: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ):
        self.latent_dim = latent_dim
        self.components = components
        self.lambda_energy = lambda_energy
        self.lambda_diag = lambda_diag
        self.jitter = jitter
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _train(self, images: Tensor) -> None:
        check_ints(1, latent_dim=self.latent_dim, components=self.components, epochs=self.epochs)
        check_positive(jitter=self.jitter, lr=self.lr)
        self.network_ = DAGMMNetwork(self.input_shape_, self.latent_dim, self.components).to(self.device_)

        def loss(x: Tensor) -> Tensor:
            x = to_signed(x)
            reconstruction, z, gamma = self.network_(x)
            phi, mu, sigma = gmm_parameters(z, gamma, self.jitter)
            diag_penalty = (1 / sigma.diagonal(dim1=1, dim2=2)).sum()
            return ((reconstruction - x).pow(2).mean() + self.lambda_energy * sample_energy(z, phi, mu, sigma).mean()
                    + self.lambda_diag * diag_penalty)

        generator = torch.Generator().manual_seed(self.seed_)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr)
        train(self.network_, loss, images.to(self.device_), optimizer, self.epochs, self.batch_size, generator,
              verbose=self.verbose, name="DAGMM")
        self.network_.eval()
        z, gamma = self._latent(images)
        self.phi_, self.mu_, self.sigma_ = gmm_parameters(z, gamma, self.jitter)

    @torch.no_grad()
    def _latent(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(z, memberships) of all images in eval mode, float64 on the CPU."""
        self.network_.eval()
        both = in_batches(lambda x: torch.cat(self.network_(to_signed(x))[1:], dim=1), images, 1000, self.device_)
        both = both.double()
        return both[:, : self.network_.z_dim], both[:, self.network_.z_dim:]

    def _score(self, images: Tensor) -> Tensor:
        z, _ = self._latent(images)
        return -sample_energy(z, self.phi_, self.mu_, self.sigma_)
