"""Diagram losses: hand-computed values, agreement with the connectivity loss, gradients."""

import math

import pytest
import torch

import corel.pershom as pershom
from corel import ConnectivityLoss, DiagramTargetLoss, TotalPersistence, h0_persistence, rips_persistence

SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)


def test_hand_computed_values():
    line = torch.tensor([[0.0], [1.0], [3.0]])  # deaths 1 and 2
    h0 = h0_persistence(line, "l1")
    assert TotalPersistence(dimension=0)(h0).item() == 3.0
    assert TotalPersistence(dimension=0, p=2)(h0).item() == 5.0
    assert DiagramTargetLoss(target=2.0)(h0).item() == 1.0
    assert DiagramTargetLoss(target=2.0, p=2, reduction="mean")(h0).item() == 0.5
    assert DiagramTargetLoss(target=2.0, reduction="none")(h0).tolist() == [1.0, 0.0]
    # the square's loop: birth 1, death sqrt(2)
    diagrams = rips_persistence(SQUARE, "l2", 1)
    assert TotalPersistence(dimension=1)(diagrams).item() == pytest.approx(math.sqrt(2) - 1)
    assert DiagramTargetLoss(target=0.5, dimension=1, coordinate="birth")(diagrams).item() == pytest.approx(0.5)
    torchph = pershom.vr_persistence_l2(SQUARE, 1)
    assert TotalPersistence(dimension=1)(torchph).item() == pytest.approx(math.sqrt(2) - 1)
    assert TotalPersistence(dimension=1)(diagrams[1].pairs).item() == pytest.approx(math.sqrt(2) - 1)


def test_no_classes_gives_zero():
    diagrams = rips_persistence(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), "l1", 1)
    assert TotalPersistence(dimension=1)(diagrams).item() == 0.0
    assert DiagramTargetLoss(target=1.0, dimension=1, reduction="mean")(diagrams).item() == 0.0


def test_target_loss_is_the_connectivity_loss_of_one_cloud():
    torch.manual_seed(0)
    z = torch.randn(30, 6)
    expected = ConnectivityLoss(eta=1.5, reduction="sum")(z)
    torch.testing.assert_close(DiagramTargetLoss(target=1.5)(rips_persistence(z, "l1", 0)), expected)


def test_p_below_one_has_finite_gradients_at_zero_length():
    """pow's derivative at 0 is infinite for p < 1: a duplicate point (a zero-length bar) or a death
    equal to the target made every gradient NaN."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    for loss in (TotalPersistence(dimension=0, p=0.5), DiagramTargetLoss(target=1.0, dimension=0, p=0.5)):
        (gradient,) = torch.autograd.grad(loss(h0_persistence(x)), x)
        assert torch.isfinite(gradient).all()
    # elsewhere the ordinary derivative: p * length^(p - 1) along the bar
    (gradient,) = torch.autograd.grad(TotalPersistence(dimension=0, p=0.5)(h0_persistence(x[1:])), x)
    assert gradient[3, 0].item() == pytest.approx(0.5 * 2.0 ** -0.5)


def test_gradient_descent_shrinks_the_loops():
    torch.manual_seed(0)
    angles = torch.linspace(0, 2 * math.pi, 13)[:-1]
    x = (torch.stack([angles.cos(), angles.sin()], 1) + 0.05 * torch.randn(12, 2)).requires_grad_()
    loss_fn = TotalPersistence(dimension=1)
    opt = torch.optim.SGD([x], lr=0.05)
    first = loss_fn(rips_persistence(x, "l2", 1)).item()
    assert first > 0.5
    for _ in range(30):
        opt.zero_grad()
        loss_fn(rips_persistence(x, "l2", 1)).backward()
        opt.step()
    assert loss_fn(rips_persistence(x, "l2", 1)).item() < 0.5 * first


@pytest.mark.parametrize("factory, message", [
    (lambda: TotalPersistence(dimension=-1), "dimension"), (lambda: TotalPersistence(p=0), "p must"),
    (lambda: DiagramTargetLoss(target=math.nan), "target"), (lambda: DiagramTargetLoss(1.0, coordinate="x"), "coordinate"),
    (lambda: DiagramTargetLoss(1.0, reduction="max"), "reduction"), (lambda: DiagramTargetLoss(1.0, dimension=1.5), "dimension"),
    (lambda: TotalPersistence(p="1"), "p must"), (lambda: DiagramTargetLoss(target=None), "target must"),
])
def test_bad_parameters(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_bad_results():
    diagrams = rips_persistence(SQUARE, "l2", 1)
    with pytest.raises(ValueError, match="dimensions 0..1, not 2"):
        TotalPersistence(dimension=2)(diagrams)
    with pytest.raises(ValueError, match=r"\(f, 2\)"):
        TotalPersistence()(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="expected"):
        TotalPersistence()("diagram")
    with pytest.raises(ValueError, match="the loss is of dimension 0, the diagram of dimension 1"):
        TotalPersistence(dimension=0)(diagrams[1])  # it read as an empty dimension 0: a silent 0
    with pytest.raises(ValueError, match="got lengths 2 and 1"):
        TotalPersistence()(([torch.zeros(0, 2), torch.zeros(0, 2)], [torch.zeros(1)]))
    with pytest.raises(ValueError, match="codes must be a torch.Tensor"):
        ConnectivityLoss()(torch.zeros(4, 2).numpy())
    with pytest.raises(ValueError, match="max_ball_diameter must be a number"):
        pershom.vr_persistence_l1(SQUARE, 0, None)
