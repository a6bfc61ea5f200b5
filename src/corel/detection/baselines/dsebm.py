"""Deep structured energy-based model, DSEBM (Zhai et al., ICML 2016), in the image configuration of
Golan & El-Yaniv's comparison code (NeurIPS 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from corel._checks import check_ints
from corel.detection.baselines._common import (BaselineDetector, check_non_negative, check_positive, in_batches,
                                                  train)
from corel.detection.baselines._networks import ConvEncoder, to_signed


class EnergyModel(nn.Module):
    """E(x) = 0.5 ||x - b||^2 - sum_j h_j(x): a Gaussian prior with learned mean b (an image) minus the
    summed outputs of a convolutional encoder with ReLU code.  (B, C, H, W) -> (B,)."""

    def __init__(self, input_shape: tuple[int, int, int], code_dim: int):
        super().__init__()
        self.encoder = ConvEncoder(input_shape, code_dim, nn.ReLU())
        self.prior_mean = nn.Parameter(torch.zeros(input_shape))

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (x - self.prior_mean).pow(2).flatten(1).sum(dim=1) - self.encoder(x).sum(dim=1)

    def energy_gradient(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """dE/dx (B, C, H, W); with ``create_graph`` it stays differentiable in the parameters."""
        with torch.enable_grad():  # also when scoring under no_grad
            x = x if x.requires_grad else x.detach().requires_grad_()
            (grad,) = torch.autograd.grad(self(x).sum(), x, create_graph=create_graph)
        return grad


class DSEBM(BaselineDetector):
    """DSEBM trained by denoising score matching: x~ = x + N(0, ``noise_std``^2) noise, reconstruction
    x~ - dE/dx~ (x~), mean squared error to the clean x; images scaled to [-1, 1].

    ``score``: "energy" (DSEBM-e, the reference's choice: minus the energy) or "reconstruction"
    (DSEBM-r: minus ||dE/dx||^2, the squared error of the noise-free one-step reconstruction).
    Higher = more normal.  Defaults are the reference's: 256-d ReLU code, noise std 0.5, Adam 1e-3,
    batch 128, 200 epochs.
    """

    def __init__(
        self,
        code_dim: int = 256,
        noise_std: float = 0.5,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        score: str = "energy",
        contamination: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ):
        self.code_dim = code_dim
        self.noise_std = noise_std
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.score = score
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _train(self, images: Tensor) -> None:
        check_ints(1, code_dim=self.code_dim, epochs=self.epochs)
        check_positive(lr=self.lr)
        if self.score not in ("energy", "reconstruction"):
            raise ValueError(f"score must be 'energy' or 'reconstruction', got {self.score!r}")
        check_non_negative(noise_std=self.noise_std)
        self.score_ = self.score  # fixed at fit, as every parameter (set_params after fit changes nothing)
        self.model_ = EnergyModel(self.input_shape_, self.code_dim).to(self.device_)

        def score_matching(x: Tensor) -> Tensor:
            x = to_signed(x)
            noisy = x + self.noise_std * torch.randn_like(x)
            reconstruction = noisy - self.model_.energy_gradient(noisy, create_graph=True)
            return (reconstruction - x).pow(2).mean()

        generator = torch.Generator().manual_seed(self.seed_)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        train(self.model_, score_matching, images.to(self.device_), optimizer, self.epochs, self.batch_size, generator,
              verbose=self.verbose, name="DSEBM")
        self.model_.eval()

    def _score(self, images: Tensor) -> Tensor:
        self.model_.eval()

        def score(x: Tensor) -> Tensor:
            x = to_signed(x)
            if self.score_ == "energy":
                with torch.no_grad():
                    return -self.model_(x)
            return -self.model_.energy_gradient(x).pow(2).flatten(1).sum(dim=1)

        return in_batches(score, images, 500, self.device_)
