"""Edge lengths in one fixed rounding: the same bits whatever the layout (and so on any device)."""

import numpy as np
import pytest
import torch

from corel.topology.distances import lp_norm


def _oracle(diff: np.ndarray, p: float) -> np.ndarray:
    """float32 terms into eight partial sums (term i into partial i mod 8, in increasing i), the
    partials added in halves, one exactly rounded numpy operation at a time: the order lp_norm
    promises on every device."""
    out = []
    for row in diff.astype(np.float32):
        terms = np.abs(row) if p == 1 else row * row
        partial = [np.float32(0)] * 8
        for i, term in enumerate(terms):
            partial[i % 8] = np.float32(partial[i % 8] + term)
        while len(partial) > 1:
            half = len(partial) // 2
            partial = [np.float32(partial[i] + partial[i + half]) for i in range(half)]
        out.append(partial[0] if p == 1 else np.sqrt(partial[0]))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("d", [1, 10, 37, 64, 160])
def test_lengths_follow_one_order_whatever_the_layout(rng, p, d):
    # coordinates over 12 orders of magnitude: any other order of additions rounds differently
    diff = (rng.normal(size=(300, d)) * 10.0 ** rng.integers(-6, 6, size=(300, d))).astype(np.float32)
    want = _oracle(diff, p)
    flat = torch.from_numpy(diff)
    assert torch.equal(lp_norm(flat, p), torch.from_numpy(want))
    assert torch.equal(lp_norm(flat.flip(0).reshape(3, 100, d), p).reshape(-1).flip(0), torch.from_numpy(want))
    assert torch.equal(torch.stack([lp_norm(row, p) for row in flat[:20]]), torch.from_numpy(want[:20]))


def test_zero_length_has_zero_gradient():
    v = torch.zeros(3, 5, requires_grad=True)
    lp_norm(v, 2.0).sum().backward()
    assert torch.equal(v.grad, torch.zeros(3, 5))


def test_float32_roots_are_exactly_rounded(rng):
    """torch's CPU sqrt is one ulp off for many float32 values; the lengths' root never is
    (numpy's is the exactly rounded reference), including the hardest cases, next to squares."""
    from corel.topology.distances import _sqrt

    squares = np.arange(1, 1 << 12, dtype=np.float32) ** 2
    values = np.concatenate([squares, np.nextafter(squares, np.float32(np.inf)), np.nextafter(squares, np.float32(0)),
                             (rng.random(10 ** 5) * 10.0 ** rng.integers(-30, 30, 10 ** 5)).astype(np.float32)])
    assert np.array_equal(_sqrt(torch.from_numpy(values)).numpy(), np.sqrt(values))
