"""Autoencoders with independent latent branches (the architecture of Hofer et al., ICML 2019)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real

import torch
from torch import Tensor, nn

from corel._checks import check_ints


INITS = ("layer", "block")


class BlockLinear(nn.Module):
    """Block-diagonal linear layer: ``blocks`` independent maps of in_features/blocks -> out_features/blocks.

    (B, in_features) -> (B, out_features); block i sees only the i-th consecutive slice of the input,
    so the latent branches of the autoencoder share no weights and no inputs.

    ``init``: weights and biases uniform in +-1/sqrt(fan_in), nn.Linear's default, with fan_in the
    whole layer's ``in_features`` ("layer": the authors' masked nn.Linear, e.g. 1/sqrt(2048) in the
    paper's encoder) or one block's ("block": 1/sqrt(128) there, codes about 4x larger at the start).
    """

    def __init__(self, in_features: int, out_features: int, blocks: int, bias: bool = True, init: str = "layer"):
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ValueError(f"{in_features} -> {out_features} features do not split into {blocks} blocks")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
        self.blocks = blocks
        block_in, block_out = in_features // blocks, out_features // blocks
        self.weight = nn.Parameter(torch.empty(blocks, block_in, block_out))
        self.bias = nn.Parameter(torch.empty(blocks, block_out)) if bias else None
        bound = 1 / math.sqrt(in_features if init == "layer" else block_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        # (blocks, B, in) @ (blocks, in, out): one batched matmul for all blocks
        y = torch.bmm(x.reshape(b, self.blocks, -1).transpose(0, 1), self.weight)
        if self.bias is not None:
            y = y + self.bias[:, None, :]
        return y.transpose(0, 1).reshape(b, -1)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of a branched autoencoder; stored with every saved backbone.

    kind: "conv" (images, the paper's network) or "mlp" (vectors or small images).
    input_shape: (C, H, W) of the images, or (D,) for vectors.
    filters: conv channels per stride-2 layer, or hidden widths of the MLP encoder.
    The latent code has branches * branch_dim dimensions.
    init: how the block-diagonal latent maps start ("layer": the authors', "block"; see :class:`BlockLinear`).
    """

    kind: str = "conv"
    input_shape: tuple[int, ...] = (3, 32, 32)
    filters: tuple[int, ...] = (32, 64, 128)
    branches: int = 16
    branch_dim: int = 10
    negative_slope: float = 0.01
    init: str = "layer"

    @property
    def latent_dim(self) -> int:
        return self.branches * self.branch_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderConfig":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["filters"] = tuple(d["filters"])
        d.setdefault("init", "block")  # files written before the option existed were block-initialised
        return cls(**d)


class BranchedAutoencoder(nn.Module):
    """Encoder -> (B, branches * branch_dim) codes -> decoder, with block-diagonal latent maps.

    conv: three stride-2 Conv2d (kernel 3, padding 1) with LeakyReLU, flatten, BlockLinear to the
    branches; decoder BlockLinear back (no activation), three ConvTranspose2d with ReLU between them
    and none at the output.  mlp: Linear + LeakyReLU layers instead of the convolutions.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        c = config
        if not c.filters:
            raise ValueError("filters must name at least one layer, got none")
        check_ints(1, **{f"input_shape[{i}]": v for i, v in enumerate(c.input_shape)},
                   **{f"filters[{i}]": v for i, v in enumerate(c.filters)},
                   branches=c.branches, branch_dim=c.branch_dim)
        if isinstance(c.negative_slope, bool) or not isinstance(c.negative_slope, Real):
            raise ValueError(f"negative_slope must be a number, got {c.negative_slope!r}")
        if c.kind == "conv":
            if len(c.input_shape) != 3:
                raise ValueError(f"a conv autoencoder needs input_shape (C, H, W), got {c.input_shape}")
            channels, height, width = c.input_shape
            scale = 2 ** len(c.filters)
            if height % scale or width % scale:
                raise ValueError(f"image size {height}x{width} is not divisible by {scale}")
            self.feature_shape = (c.filters[-1], height // scale, width // scale)
            widths = (channels, *c.filters)
            enc: list[nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:]):
                enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.LeakyReLU(c.negative_slope)]
            dec: list[nn.Module] = []
            for a, b in zip(widths[:0:-1], widths[-2::-1]):
                dec += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), nn.ReLU()]
            dec.pop()  # no activation on the reconstruction
        elif c.kind == "mlp":
            in_dim = math.prod(c.input_shape)
            self.feature_shape = (c.filters[-1],)
            widths = (in_dim, *c.filters)
            enc = []
            for a, b in zip(widths[:-1], widths[1:]):
                enc += [nn.Linear(a, b), nn.LeakyReLU(c.negative_slope)]
            dec = []
            for a, b in zip(widths[:0:-1], widths[-2::-1]):
                dec += [nn.Linear(a, b), nn.LeakyReLU(c.negative_slope)]
            dec.pop()
        else:
            raise ValueError(f"unknown autoencoder kind {c.kind!r}: use 'conv' or 'mlp'")
        features = math.prod(self.feature_shape)
        self.encoder_body = nn.Sequential(*enc)
        self.to_latent = BlockLinear(features, c.latent_dim, c.branches, init=c.init)
        self.from_latent = BlockLinear(c.latent_dim, features, c.branches, init=c.init)
        self.decoder_body = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        """(B, *input_shape) in [0, 1] -> (B, branches * branch_dim) codes."""
        if self.config.kind == "mlp":
            x = x.reshape(x.shape[0], -1)
        return self.to_latent(self.encoder_body(x).reshape(x.shape[0], -1))

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) codes -> (B, *input_shape) reconstructions."""
        h = self.from_latent(z).reshape(z.shape[0], *self.feature_shape)
        return self.decoder_body(h).reshape(z.shape[0], *self.config.input_shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encode(x)
        return z, self.decode(z)
