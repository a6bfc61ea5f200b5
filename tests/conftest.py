"""Shared fixtures: the metrics every persistence test runs under, the shared data folder, an RNG."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# corel's metric and scipy's cdist arguments for the same metric (the oracle's)
METRICS = [("l1", {"metric": "cityblock"}), ("l2", {"metric": "euclidean"}),
           ("linf", {"metric": "chebyshev"}), (3.0, {"metric": "minkowski", "p": 3.0})]

# ../shared/data beside the project (CIFAR-10 as cifar10.npz); tests that need it skip without it
SHARED_DATA = Path(os.environ.get("COREL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_configure(config):
    torch.manual_seed(0)
