import pytest
import torch

from corel import ConnectivityLoss


def test_hand_computed_value():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 4.0]])  # two branches of dimension 1
    # branch 0: deaths 1, 2 -> |1-2| + |2-2| = 1; branch 1: deaths 0, 4 -> 2 + 2 = 4
    assert ConnectivityLoss(eta=2.0, branches=2, reduction="mean")(z).item() == pytest.approx(2.5)
    assert ConnectivityLoss(eta=2.0, branches=2, reduction="sum")(z).item() == pytest.approx(5.0)
    assert ConnectivityLoss(eta=2.0, branches=2, reduction="none")(z).tolist() == [1.0, 4.0]
    # l2 on the 2-d codes: deaths 1 and sqrt(20)
    assert ConnectivityLoss(eta=2.0, branches=1, metric="l2")(z).item() == pytest.approx(1 + 20**0.5 - 2)


def test_branches_are_independent_clouds():
    torch.manual_seed(0)
    z = torch.randn(50, 12)
    loss = ConnectivityLoss(eta=1.0, branches=3, reduction="none")
    single = ConnectivityLoss(eta=1.0, branches=1, reduction="none")
    expected = torch.cat([single(z[:, 4 * i: 4 * i + 4]) for i in range(3)])
    torch.testing.assert_close(loss(z), expected)


def test_gradient_descent_moves_deaths_towards_eta():
    torch.manual_seed(0)
    z = (0.1 * torch.randn(64, 10)).requires_grad_()
    loss_fn = ConnectivityLoss(eta=2.0)
    opt = torch.optim.SGD([z], lr=0.05)
    first = loss_fn(z).item()
    for _ in range(200):
        opt.zero_grad()
        loss_fn(z).backward()
        opt.step()
    assert loss_fn(z).item() < 0.25 * first


@pytest.mark.parametrize("kwargs, message", [
    ({"eta": 0.0}, "eta"), ({"eta": float("inf")}, "eta must be a finite number > 0"),
    ({"eta": float("nan")}, "eta"), ({"branches": 0}, "branches"), ({"branches": True}, "branches"),
    ({"reduction": "max"}, "reduction"), ({"metric": "l7"}, "metric"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConnectivityLoss(**kwargs)


def test_bad_codes():
    with pytest.raises(ValueError, match="at least 2"):
        ConnectivityLoss()(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="divisible"):
        ConnectivityLoss(branches=3)(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="shape"):
        ConnectivityLoss()(torch.zeros(5))
