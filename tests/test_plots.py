"""Plotting helpers draw what they are given (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from bncourse.plots import percentile_bands, plot_curves, plot_percentile_bands, plot_sweep, side_by_side, smooth
from bncourse.train import History


def test_are_percentile_bands_numpys_percentiles_per_row():
    rng = np.random.default_rng(0)
    records = [torch.tensor(rng.normal(size=50)) for _ in range(4)]
    bands = percentile_bands(records)
    assert bands.shape == (4, 3)
    np.testing.assert_allclose(bands[2], np.percentile(records[2].numpy(), [15, 50, 85]))
    assert (bands[:, 0] <= bands[:, 1]).all() and (bands[:, 1] <= bands[:, 2]).all()


def test_does_smooth_average_a_trailing_window():
    np.testing.assert_allclose(smooth([1, 3, 5, 7], 2), [1, 2, 4, 6])
    np.testing.assert_allclose(smooth([1, 3], 1), [1, 3])


def test_do_curves_get_one_line_per_history_with_its_label():
    h1 = History(label="BN", eval_steps=[0, 10], test_acc=[0.1, 0.9])
    h2 = History(label="no BN", eval_steps=[0, 10], test_acc=[0.1, 0.5])
    fig, axes = side_by_side(2, titles=["a", "b"])
    ax = plot_curves([h1, h2], "test_acc", ax=axes[0])
    assert [l.get_label() for l in ax.get_lines()] == ["BN", "no BN"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.1, 0.5])
    with pytest.raises(ValueError, match="metric"):
        plot_curves(h1, "accuracy")


def test_does_the_percentile_plot_draw_three_lines_with_a_solid_median():
    bands = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.5, 2.0]])
    ax = plot_percentile_bands([0, 100], bands)
    lines = ax.get_lines()
    assert len(lines) == 3 and lines[1].get_linestyle() == "-" and lines[0].get_linestyle() == "--"
    np.testing.assert_allclose(lines[2].get_ydata(), [1.0, 2.0])


def test_does_plot_sweep_draw_one_line_per_label_on_a_log_axis():
    ax = plot_sweep([0.1, 1.0], {"BN": [0.9, 0.95], "no BN": [0.5, 0.1]}, xlabel="lr", chance=0.1)
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 3
