"""Losses on persistence diagrams, as small composable ``nn.Module``s."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from corel.distances import Metric, metric_order
from corel.pershom import h0_persistence

_REDUCTIONS = ("mean", "sum", "none")


class ConnectivityLoss(nn.Module):
    """Connectivity loss of Hofer et al. (ICML 2019) on a mini-batch of latent codes.

    For codes ``z`` of shape (b, D), D is split into ``branches`` equal consecutive blocks; per
    branch, the 0-dim Vietoris-Rips death times d_1..d_{b-1} of the b codes give the loss
    ``sum_i |d_i - eta|``, which pushes the batch towards a homogeneous arrangement at scale eta
    (units of ``metric``).  ``reduction``: "mean" over branches (the authors' code), "sum" (the
    paper's figure) or "none" (one value per branch).  All branches go through one batched H0 call.
    """

    def __init__(self, eta: float = 2.0, metric: Metric = "l1", branches: int = 1, reduction: str = "mean"):
        super().__init__()
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta!r}")
        if not (isinstance(branches, int) and branches >= 1):
            raise ValueError(f"branches must be a positive int, got {branches!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        metric_order(metric)
        self.eta = float(eta)
        self.metric = metric
        self.branches = branches
        self.reduction = reduction

    def death_times(self, z: Tensor) -> Tensor:
        """0-dim death times per branch: (b, D) codes -> (branches, b-1), ascending."""
        if z.ndim != 2:
            raise ValueError(f"codes must have shape (b, D), got {tuple(z.shape)}")
        b, dim = z.shape
        if b < 2:
            raise ValueError(f"the connectivity loss needs a batch of at least 2 codes, got {b}")
        if dim % self.branches:
            raise ValueError(f"code dimension {dim} is not divisible into {self.branches} branches")
        clouds = z.reshape(b, self.branches, dim // self.branches).transpose(0, 1)
        return h0_persistence(clouds, self.metric).deaths

    def from_death_times(self, deaths: Tensor) -> Tensor:
        """The loss from death times (branches, b-1), e.g. those of :meth:`death_times`."""
        per_branch = (deaths - self.eta).abs().sum(dim=-1)
        if self.reduction == "mean":
            return per_branch.mean()
        if self.reduction == "sum":
            return per_branch.sum()
        return per_branch

    def forward(self, z: Tensor) -> Tensor:
        return self.from_death_times(self.death_times(z))

    def extra_repr(self) -> str:
        return f"eta={self.eta}, metric={self.metric!r}, branches={self.branches}, reduction={self.reduction!r}"
