"""Pictures of ``bncourse.diagnostics`` reports that a learner reads at a glance.

- ``plot_histograms(report, "activations" | "gradients", step)``: one density curve per layer
  (tanh, sigmoid, ReLU outputs, or the gradient arriving at them), the layer's saturated fraction
  in the legend: Karpathy's "makemore part 3" pictures.
- ``plot_update_ratios(report)``: log10 update-to-data ratio of every weight over the steps, with
  the guide line at 1e-3.
- ``compare_reports({"without BN": r1, "with BN": r2}, ...)``: the same picture side by side, with
  a shared axis so the two can be compared.

Each function draws on an ``Axes`` (made when ``ax=None``) and returns it; ``compare_reports``
returns the figure. Titles say what to look for.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from bncourse.diagnostics import KINDS, DiagnosticsReport

GUIDE = -3.0  # log10 of the update-to-data ratio Karpathy aims for
WHAT_TO_LOOK_FOR = {
    "activations": "look for: the same shape in every layer, few values piled at ±1 (saturated)",
    "gradients": "look for: the same width in every layer (no layer's gradients far narrower or wider)",
    "updates": "look for: every layer near the 1e-3 line, none far below (not learning) or above",
}


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    return ax


def _density(values: np.ndarray, bins: int, lo: float, hi: float):
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi), density=True)
    return (edges[:-1] + edges[1:]) / 2, counts


def plot_histograms(report: DiagnosticsReport, what: str = "activations", step: int = 0, ax=None,
                    bins: int = 60, kinds=KINDS, title: str | None = None, limit: float | None = None):
    """Density of each nonlinearity's outputs (``what="activations"``) or of the gradient arriving at
    them (``"gradients"``) at ``step``; the legend gives each layer's mean, std and saturated share.

    limit: the x range is [-limit, limit] (default: activations [-1, 1] for tanh, the data's range otherwise).
    """
    if what not in ("activations", "gradients"):
        raise ValueError(f"what must be 'activations' or 'gradients', got {what!r}")
    ax = _axes(ax)
    snaps = [s for s in report.snapshots_at(step, kinds) if (s.activations if what == "activations" else s.gradients)
             is not None]
    if not snaps:
        have = sorted({s.step for s in report.snapshots})
        raise ValueError(f"no {what} recorded at step {step} (histograms were kept at steps {have}; "
                         f"pass Diagnostics(..., histograms_at=...))")
    data = [s.activations if what == "activations" else s.gradients for s in snaps]
    if limit is None:
        if what == "activations" and all(s.kind == "tanh" for s in snaps):
            limit = 1.0
        else:
            limit = float(max(np.percentile(np.abs(d), 99.5) for d in data)) or 1.0
    lo = 0.0 if what == "activations" and all(s.kind in ("sigmoid", "relu") for s in snaps) else -limit
    cmap = _colors(len(snaps))
    for i, (s, d) in enumerate(zip(snaps, data)):
        x, y = _density(d, bins, lo, limit)
        if what == "activations":
            sat = "dead" if s.kind == "relu" else "saturated"
            label = f"{s.layer} ({s.kind}): mean {d.mean():+.2f}, std {d.std():.2f}, {sat} {100 * s.saturated:.0f}%"
        else:
            label = f"{s.layer}: mean {d.mean():+.1e}, std {d.std():.1e}"
        ax.plot(x, y, color=cmap[i], label=label, lw=1.3)
    ax.set_xlabel("activation value" if what == "activations" else "gradient value")
    ax.set_ylabel("density")
    ax.set_title(title or f"{what} at step {step}\n{WHAT_TO_LOOK_FOR[what]}", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper right", frameon=False)
    return ax


def plot_update_ratios(report: DiagnosticsReport, ax=None, title: str | None = None, weights_only: bool = True,
                       ylim: tuple[float, float] | None = (-6.0, 0.0)):
    """log10(std(update) / std(data)) of each weight over the steps, with the 1e-3 guide line."""
    ax = _axes(ax)
    params = report.weights() if weights_only else list(report.params.values())
    cmap = _colors(len(params))
    for i, p in enumerate(params):
        y = p.log10_update_to_data
        ok = np.isfinite(y)
        ax.plot(p.update_steps[ok], y[ok], color=cmap[i], lw=1.0, label=f"{p.name} {tuple(p.shape)}")
    ax.axhline(GUIDE, color="k", ls="--", lw=1.0, label="1e-3 guide")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("step")
    ax.set_ylabel("log10 update / data")
    ax.set_title(title or f"update-to-data ratio per weight\n{WHAT_TO_LOOK_FOR['updates']}", fontsize=9)
    ax.legend(fontsize=6.5, loc="lower right", frameon=False, ncol=2)
    return ax


def compare_reports(reports: Mapping[str, DiagnosticsReport], what: str = "activations", step: int = 0,
                    width: float = 6.0, height: float = 3.8, **kwargs):
    """The same picture for several reports side by side (e.g. without and with batch norm): the figure.

    what: "activations", "gradients" (histograms at ``step``) or "updates" (ratios over the steps).
    """
    import matplotlib.pyplot as plt

    n = len(reports)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=what == "updates", squeeze=False)
    axes = list(axes[0])
    if what == "activations" and "limit" not in kwargs:  # gradients: each its own range (BN changes their scale)
        kwargs["limit"] = _shared_limit(reports, what, step)
    for ax, (name, report) in zip(axes, reports.items()):
        if what == "updates":
            plot_update_ratios(report, ax=ax, title=name, **kwargs)
        else:
            plot_histograms(report, what, step, ax=ax, title=name, **kwargs)
    fig.suptitle(f"{'update-to-data ratios' if what == 'updates' else f'{what} at step {step}'}: "
                 f"{WHAT_TO_LOOK_FOR[what]}", fontsize=10)
    fig.tight_layout()
    return fig


def _shared_limit(reports, what: str, step: int) -> float | None:
    snaps = [s for r in reports.values() for s in r.snapshots_at(step)]
    if what == "activations" and snaps and all(s.kind == "tanh" for s in snaps):
        return 1.0
    vals = [s.activations if what == "activations" else s.gradients for s in snaps]
    vals = [v for v in vals if v is not None and len(v)]
    return float(max(np.percentile(np.abs(v), 99.5) for v in vals)) or 1.0 if vals else None


def _colors(n: int):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(np.linspace(0.0, 0.9, max(n, 1)))
