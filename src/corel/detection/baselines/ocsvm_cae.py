"""OC-SVM on the codes of a convolutional autoencoder trained on the class samples (the CAE OC-SVM
baseline of Golan & El-Yaniv, NeurIPS 2018), or on the codes of a given encoder."""

from __future__ import annotations

from numbers import Real
from typing import Callable

import numpy as np
import torch
from sklearn.svm import OneClassSVM
from torch import Tensor, nn

from corel._checks import check_ints
from corel.detection.baselines._common import BaselineDetector, check_positive, in_batches, train
from corel.detection.baselines._networks import ConvDecoder, ConvEncoder, to_signed

Encoder = Callable[[Tensor], "Tensor | np.ndarray"]


class OCSVMCAE(BaselineDetector):
    """scikit-learn's ``OneClassSVM(kernel="rbf")`` on autoencoder codes.

    Without ``encoder``: a convolutional autoencoder (the reference's: 256-d tanh code, decoder with
    tanh output, images scaled to [-1, 1], mean squared error, Adam) is trained on the class samples for
    ``epochs`` epochs of ``batch_size``.  With ``encoder``: a callable (or torch module, used in eval
    mode) mapping float images (B, C, H, W) in [0, 1] on ``device`` to codes (B, ...), e.g. a corel
    backbone's ``encode``; nothing is trained and the codes are flattened.

    Hyperparameters without the test split: ``nu`` = 0.1 and ``gamma`` = "scale" (scikit-learn's
    1 / (code_dim * variance of the training codes)), a fixed rule.  The reference instead picked the
    best (nu, gamma) of a grid by test AUROC, which a real user cannot do.

    Scores: the SVM's ``score_samples`` (its decision function before the offset); higher = more normal.
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        code_dim: int = 256,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        nu: float = 0.1,
        gamma: float | str = "scale",
        contamination: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ):
        self.encoder = encoder
        self.code_dim = code_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.nu = nu
        self.gamma = gamma
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _train(self, images: Tensor) -> None:
        if isinstance(self.nu, bool) or not isinstance(self.nu, Real) or not 0 < self.nu <= 1:
            raise ValueError(f"nu must be in (0, 1], got {self.nu!r}")
        if self.encoder is None:
            check_ints(1, code_dim=self.code_dim, epochs=self.epochs)
            check_positive(lr=self.lr)
            self.encoder_ = ConvEncoder(self.input_shape_, self.code_dim, nn.Tanh()).to(self.device_)
            decoder = ConvDecoder(self.input_shape_, self.code_dim).to(self.device_)
            autoencoder = nn.Sequential(self.encoder_, decoder)

            def loss(x: Tensor) -> Tensor:
                x = to_signed(x)
                return (autoencoder(x) - x).pow(2).mean()

            generator = torch.Generator().manual_seed(self.seed_)
            optimizer = torch.optim.Adam(autoencoder.parameters(), lr=self.lr)
            train(autoencoder, loss, images.to(self.device_), optimizer, self.epochs, self.batch_size, generator,
                  verbose=self.verbose, name="CAE")
        else:
            self.encoder_ = self.encoder
        self.own_encoder_ = self.encoder is None  # its autoencoder takes [-1, 1] images, a given encoder [0, 1]
        self.svm_ = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma).fit(self._codes(images))

    @torch.no_grad()
    def _codes(self, images: Tensor) -> np.ndarray:
        if isinstance(self.encoder_, nn.Module):
            self.encoder_.eval()

        def encode(x: Tensor) -> Tensor:
            return torch.as_tensor(self.encoder_(to_signed(x) if self.own_encoder_ else x)).reshape(len(x), -1).float()

        codes = in_batches(encode, images, 1000, self.device_).double().numpy()
        if not np.isfinite(codes).all():
            raise ValueError("the encoder produced NaN or inf codes")
        return codes

    def _score(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self.svm_.score_samples(self._codes(images)))
