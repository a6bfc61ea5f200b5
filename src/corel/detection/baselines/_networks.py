"""The convolutional encoder and decoder of Golan & El-Yaniv's comparison code (NeurIPS 2018), shared by
the CAE of OC-SVM, DSEBM and DAGMM.

Encoder: three 3x3 stride-2 convolutions of 64, 128, 256 channels, each with batch norm and ReLU,
flattened, then a dense layer to the code.  Decoder: dense to 256 x H/8 x W/8 with batch norm and ReLU,
two 3x3 stride-2 transposed convolutions (128, 64 channels; batch norm, ReLU), a last one to the image
channels and tanh: images live in [-1, 1] for these networks.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

WIDTH = 64  # nf of the reference code


def _downsampled(side: int) -> int:
    for _ in range(3):
        side = (side + 1) // 2
    return side


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, code_dim); ``activation``: the code's nonlinearity (an nn.Module or None)."""

    def __init__(self, input_shape: tuple[int, int, int], code_dim: int, activation: nn.Module | None):
        super().__init__()
        channels, height, width = input_shape
        widths = (channels, WIDTH, 2 * WIDTH, 4 * WIDTH)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        features = widths[-1] * _downsampled(height) * _downsampled(width)
        layers += [nn.Flatten(), nn.Linear(features, code_dim)]
        if activation is not None:
            layers.append(activation)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, code_dim) -> (B, C, H, W) in [-1, 1]; H and W must be multiples of 8."""

    def __init__(self, output_shape: tuple[int, int, int], code_dim: int):
        super().__init__()
        channels, height, width = output_shape
        if height % 8 or width % 8:
            raise ValueError(f"the convolutional decoder needs image sides divisible by 8, got {height}x{width}")
        self.start = (4 * WIDTH, height // 8, width // 8)
        self.dense = nn.Sequential(nn.Linear(code_dim, math.prod(self.start)), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU())
        widths = (4 * WIDTH, 2 * WIDTH, WIDTH, channels)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        layers[-2:] = [nn.Tanh()]  # the last layer: no batch norm, tanh instead of ReLU
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.dense(z).reshape(z.shape[0], *self.start))


def to_signed(x: Tensor) -> Tensor:
    """[0, 1] images -> [-1, 1], the range of the reference code's data."""
    return x * 2 - 1
