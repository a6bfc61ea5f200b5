import re

import pytest
import torch

from corel.detection.models import AutoencoderConfig, BlockLinear, BranchedAutoencoder


def test_paper_architecture_shapes():
    model = BranchedAutoencoder()  # the authors' defaults
    x = torch.rand(4, 3, 32, 32)
    z, r = model(x)
    assert z.shape == (4, 160) and r.shape == x.shape
    convs = [m for m in model.encoder_body if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.stride == (2, 2) and c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert model.to_latent.weight.shape == (16, 128, 10)  # branch i sees 8 channels x 4 x 4 features


def test_branches_are_independent():
    model = BranchedAutoencoder()
    features = torch.randn(2, 2048, requires_grad=True)
    z = model.to_latent(features)
    z[:, 30:40].sum().backward()  # branch 3
    grad = features.grad.abs().sum(0)
    assert grad[3 * 128: 4 * 128].sum() > 0
    assert grad[: 3 * 128].sum() == 0 and grad[4 * 128:].sum() == 0


def test_block_linear_equals_dense_block_diagonal():
    layer = BlockLinear(6, 4, blocks=2)
    dense = torch.block_diag(*layer.weight)  # (6, 4)
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), x @ dense + layer.bias.reshape(-1))


def test_mlp_autoencoder_and_config_round_trip():
    cfg = AutoencoderConfig(kind="mlp", input_shape=(1, 8, 8), filters=(32, 16), branches=4, branch_dim=2)
    model = BranchedAutoencoder(cfg)
    z, r = model(torch.rand(3, 1, 8, 8))
    assert z.shape == (3, 8) and r.shape == (3, 1, 8, 8)
    assert AutoencoderConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_configs():
    with pytest.raises(ValueError, match="kind"):
        BranchedAutoencoder(AutoencoderConfig(kind="rnn"))
    with pytest.raises(ValueError, match="divisible"):
        BranchedAutoencoder(AutoencoderConfig(input_shape=(3, 20, 20)))
    with pytest.raises(ValueError, match="blocks"):
        BlockLinear(10, 4, blocks=3)
    # these crashed with ZeroDivisionError, IndexError or (at the first forward) TypeError
    for bad, name in (({"branches": 0}, "branches"), ({"branch_dim": 0}, "branch_dim"),
                      ({"filters": (32, -1)}, "filters[1]"), ({"input_shape": (3, 0, 8)}, "input_shape[1]"),
                      ({"filters": (32.0,)}, "filters[0]"), ({"branches": True}, "branches")):
        with pytest.raises(ValueError, match=rf"^{re.escape(name)} must be a positive int"):
            BranchedAutoencoder(AutoencoderConfig(kind="mlp", **bad))
    with pytest.raises(ValueError, match="filters must name at least one layer"):
        BranchedAutoencoder(AutoencoderConfig(kind="mlp", filters=()))
    with pytest.raises(ValueError, match="negative_slope"):
        BranchedAutoencoder(AutoencoderConfig(negative_slope="0.1"))


@pytest.mark.parametrize("init, fan_in", [("layer", (2048, 160)), ("block", (128, 10))])
def test_latent_initialisation(init, fan_in):
    """The authors' masked nn.Linear draws with the whole layer's fan-in; "block" with one block's."""
    model = BranchedAutoencoder(AutoencoderConfig(init=init))
    for layer, n in zip((model.to_latent, model.from_latent), fan_in):
        bound = 1 / n**0.5
        for values in (layer.weight, layer.bias):
            assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound


def test_config_without_init_reads_as_block():
    d = AutoencoderConfig().to_dict()
    del d["init"]
    assert AutoencoderConfig.from_dict(d).init == "block"
