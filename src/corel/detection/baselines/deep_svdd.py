"""One-class Deep SVDD (Ruff et al., ICML 2018): a bias-free network mapping the class close to a centre c."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corel._checks import check_ints
from corel.detection.baselines._common import (BaselineDetector, check_non_negative, check_positive, in_batches,
                                                  train)


def global_contrast_normalization(x: Tensor) -> Tensor:
    """Per image: subtract the mean over all pixels, divide by the mean absolute deviation (the l1 scale
    of the reference preprocessing).  (N, C, H, W) -> same; constant images map to zero."""
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    return x / x.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


def _bn(channels: int, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=1e-4, affine=False)


class LeNetEncoder(nn.Module):
    """The CIFAR-10 LeNet of the paper: three bias-free 5x5 convolutions (32, 64, 128 channels), each
    followed by batch norm without affine parameters, leaky ReLU and 2x2 max pooling, then a bias-free
    dense layer to ``rep_dim``.  (B, C, H, W) -> (B, rep_dim); H, W multiples of 8."""

    def __init__(self, input_shape: tuple[int, int, int], rep_dim: int = 128):
        super().__init__()
        channels, height, width = input_shape
        if height % 8 or width % 8:
            raise ValueError(f"the Deep SVDD LeNet needs image sides divisible by 8, got {height}x{width}")
        self.rep_dim = rep_dim
        self.feature_shape = (128, height // 8, width // 8)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, padding=2, bias=False) for a, b in ((channels, 32), (32, 64), (64, 128)))
        self.bns = nn.ModuleList(_bn(c) for c in (32, 64, 128))
        self.fc = nn.Linear(math.prod(self.feature_shape), rep_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        for conv, bn in zip(self.convs, self.bns):
            x = F.max_pool2d(F.leaky_relu(bn(conv(x))), 2)
        return self.fc(x.flatten(1))


class LeNetDecoder(nn.Module):
    """The mirror of :class:`LeNetEncoder` used for pretraining: the code is reshaped to
    (rep_dim / (h w), h, w) at the encoder's final resolution, then bias-free 5x5 transposed convolutions
    (128, 64, 32 channels) with batch norm, leaky ReLU and 2x nearest upsampling, a last one to the
    image channels and a sigmoid."""

    def __init__(self, output_shape: tuple[int, int, int], feature_hw: tuple[int, int], rep_dim: int = 128):
        super().__init__()
        h, w = feature_hw
        if rep_dim % (h * w):
            raise ValueError(f"rep_dim {rep_dim} does not reshape to a {h}x{w} feature map")
        self.start = (rep_dim // (h * w), h, w)
        widths = (self.start[0], 128, 64, 32)
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(a, b, 5, padding=2, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        self.bns = nn.ModuleList(_bn(c) for c in widths[1:])
        self.out = nn.ConvTranspose2d(32, output_shape[0], 5, padding=2, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        x = F.leaky_relu(z.reshape(z.shape[0], *self.start))
        for deconv, bn in zip(self.deconvs, self.bns):
            x = F.interpolate(F.leaky_relu(bn(deconv(x))), scale_factor=2)
        return torch.sigmoid(self.out(x))


class DeepSVDD(BaselineDetector):
    """One-class Deep SVDD with autoencoder pretraining, as published for CIFAR-10.

    Preprocessing (reference): global contrast normalisation (l1), then min-max scaling to [0, 1] with
    the minimum and maximum over the (normalised) class samples, fixed at fit time.
    Pretraining: :class:`LeNetEncoder` + :class:`LeNetDecoder` (batch norm on the code) for
    ``pretrain_epochs`` on the summed squared error, Adam(``lr``, ``weight_decay``), learning rate / 10
    after ``pretrain_milestone`` epochs.  The centre c is the mean code of an initial forward pass of the
    pretrained encoder (eval mode); coordinates with |c_i| < ``eps`` are set to +-eps (sign kept), so
    that the trivial all-zero solution stays away.  Then the encoder alone minimises the mean squared
    distance to c for ``epochs``, learning rate / 10 after ``milestone`` epochs.

    Score: minus the squared distance of the code to c; higher = more normal.
    Published CIFAR-10 settings are the defaults (Adam, lr 1e-4, weight decay 0.5e-6, batch 200,
    350 + 150 epochs, milestones 250 and 50, rep_dim 128, eps 0.1).
    """

    def __init__(
        self,
        rep_dim: int = 128,
        pretrain_epochs: int = 350,
        pretrain_milestone: int = 250,
        epochs: int = 150,
        milestone: int = 50,
        batch_size: int = 200,
        lr: float = 1e-4,
        weight_decay: float = 0.5e-6,
        eps: float = 0.1,
        contamination: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ):
        self.rep_dim = rep_dim
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_milestone = pretrain_milestone
        self.epochs = epochs
        self.milestone = milestone
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.eps = eps
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _preprocess(self, images: Tensor) -> Tensor:
        return (global_contrast_normalization(images) - self.min_) / (self.max_ - self.min_)

    def _schedule(self, parameters, milestone: int):
        optimizer = torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=0.1)

    def _train(self, images: Tensor) -> None:
        check_ints(1, rep_dim=self.rep_dim, epochs=self.epochs)
        check_ints(0, pretrain_epochs=self.pretrain_epochs, pretrain_milestone=self.pretrain_milestone,
                   milestone=self.milestone)
        check_positive(lr=self.lr, eps=self.eps)
        check_non_negative(weight_decay=self.weight_decay)
        gcn = global_contrast_normalization(images)
        self.min_, self.max_ = gcn.min().item(), gcn.max().item()
        if not self.max_ > self.min_:
            raise ValueError("all class samples are constant images; nothing to learn")
        data = self._preprocess(images).to(self.device_)
        generator = torch.Generator().manual_seed(self.seed_)
        self.net_ = LeNetEncoder(self.input_shape_, self.rep_dim).to(self.device_)

        if self.pretrain_epochs > 0:
            decoder = LeNetDecoder(self.input_shape_, self.net_.feature_shape[1:], self.rep_dim)
            autoencoder = nn.Sequential(self.net_, _bn(self.rep_dim, dims=1), decoder).to(self.device_)

            def reconstruction(x: Tensor) -> Tensor:
                return (autoencoder(x) - x).pow(2).flatten(1).sum(dim=1).mean()

            optimizer, scheduler = self._schedule(autoencoder.parameters(), self.pretrain_milestone)
            train(autoencoder, reconstruction, data, optimizer, self.pretrain_epochs, self.batch_size, generator,
                  scheduler, self.verbose, "Deep SVDD pretraining")

        self.net_.eval()
        with torch.no_grad():
            c = in_batches(self.net_, data, 1000, self.device_).mean(dim=0)
        near_zero = c.abs() < self.eps
        c[near_zero & (c < 0)] = -self.eps
        c[near_zero & (c >= 0)] = self.eps
        self.center_ = c.to(self.device_)

        def svdd(x: Tensor) -> Tensor:
            return (self.net_(x) - self.center_).pow(2).sum(dim=1).mean()

        optimizer, scheduler = self._schedule(self.net_.parameters(), self.milestone)
        train(self.net_, svdd, data, optimizer, self.epochs, self.batch_size, generator, scheduler, self.verbose, "Deep SVDD")
        self.net_.eval()

    @torch.no_grad()
    def _score(self, images: Tensor) -> Tensor:
        self.net_.eval()
        return in_batches(lambda x: -(self.net_(self._preprocess(x)) - self.center_).pow(2).sum(dim=1),
                          images, 1000, self.device_)
