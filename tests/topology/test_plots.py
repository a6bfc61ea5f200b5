"""Plots accept every result of the API and write real PNGs."""

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import corel.pershom as pershom
from corel import densification, h0_persistence, rips_persistence
from corel.topology.plots import death_time_histogram, plot_barcode, plot_densification, plot_diagram

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000


@pytest.fixture
def cloud(rng):
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return torch.from_numpy(np.stack([np.cos(angles), np.sin(angles)], 1) + 0.05 * rng.normal(size=(20, 2)))


@pytest.mark.parametrize("plot", [plot_barcode, plot_diagram])
def test_every_result_type(tmp_path, cloud, plot):
    results = {
        "diagrams": rips_persistence(cloud, "l2", 1, threshold=1.0),
        "torchph": pershom.vr_persistence_l2(cloud, 1),
        "h0": h0_persistence(cloud, "l2"),
        "one_diagram": rips_persistence(cloud, "l2", 1)[1],
        "bfloat16": h0_persistence(cloud.bfloat16(), "l2"),  # numpy has no bfloat16: it raised TypeError
    }
    for name, result in results.items():
        assert isinstance(plot(result, title=name), Figure)
    plot(results["diagrams"], tmp_path / "sub" / "plot.png")  # creates the folder
    assert_png(tmp_path / "sub" / "plot.png")


def test_barcode_draws_one_bar_per_class(cloud):
    diagrams = rips_persistence(cloud, "l2", 1, threshold=1.0)
    fig = plot_barcode(diagrams)
    bars = sum(len(c.get_segments()) for c in fig.axes[0].collections)
    assert bars == sum(len(d.pairs) + len(d.essential) for d in diagrams)


def test_draws_into_given_axes(cloud):
    fig = Figure()
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    diagrams = rips_persistence(cloud, "l2", 1)
    assert plot_barcode(diagrams, ax=left) is fig
    assert plot_diagram(diagrams, ax=right) is fig
    assert death_time_histogram(diagrams[0].pairs[:, 1], 0.3, None, ax=left) is fig


def test_death_time_histogram(tmp_path, rng):
    deaths = torch.from_numpy(rng.uniform(1, 3, size=(4, 99)))  # any shape, pooled
    fig = death_time_histogram(deaths, 2.0, tmp_path / "hist.png", title="end of training")
    assert_png(tmp_path / "hist.png")
    ax = fig.axes[0]
    assert ax.get_title() == "end of training"
    assert any(list(line.get_xdata()) == [2.0, 2.0] for line in ax.lines)  # eta is marked
    assert sum(patch.get_height() for patch in ax.patches) == 4 * 99
    for bad, eta, message in [([], 2.0, "no death"), ([1.0, np.nan], 2.0, "NaN"), ([1.0], 0.0, "eta")]:
        with pytest.raises(ValueError, match=message):
            death_time_histogram(bad, eta, None)


def test_densification_plot(tmp_path, rng):
    result = densification(rng.normal(size=(400, 4)), [20, 100, 400], eta=1.0, branches=2)
    plot_densification(result, tmp_path / "dens.png")
    assert_png(tmp_path / "dens.png")


def test_unknown_result_rejected():
    with pytest.raises(ValueError, match="expected"):
        plot_barcode({"pairs": []})
