"""The catalogue's entries for notebook 7: input_drift and noisy_batchnorm_forward (gradient_change: its own module).

Each entry is the measure or the layer as a learner might get it wrong (pooled or per unit,
squared or not, relative to what, cosine or angle, the noise in the wrong place, ...).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import affine, mistake, standardize
from bncourse.checks.core import Mistake
from bncourse.checks.what_bn_does import _number_as_array

def _drift(axis=0, ddof=0, absolute=True, relative="before", power=1.0, stds=True, pooled=False):
    # relative="per unit": each unit's change divided by its own spread, then averaged
    """input_drift as a learner might write it, with the knobs the mistakes turn."""
    def fn(h_before, h_after):
        a = np.asarray(h_before, dtype=np.float64)
        b = np.asarray(h_after, dtype=np.float64)
        ax = None if pooled else axis
        ma, mb = a.mean(axis=ax), b.mean(axis=ax)
        sa, sb = a.std(axis=ax, ddof=ddof) ** power, b.std(axis=ax, ddof=ddof) ** power
        dm, ds = mb - ma, sb - sa
        if absolute in (True, "means"):
            dm = np.abs(dm)
        if absolute in (True, "stds"):
            ds = np.abs(ds)
        if relative == "per unit":
            return float(np.mean((dm + (ds if stds else 0.0)) / sa))
        moved = np.mean(dm) + (np.mean(ds) if stds else 0.0)
        if relative == "before":
            return float(moved / np.mean(sa))
        if relative == "after":
            return float(moved / np.mean(sb))
        if relative in ("stds only", "means only"):  # operator precedence: only one term divided
            divided, kept = (np.mean(ds), np.mean(dm)) if relative == "stds only" else (np.mean(dm), np.mean(ds))
            return float(kept + divided / np.mean(sa))
        return float(moved)

    return fn


_AGG = {"mean": np.mean, "median": np.median, "max": np.max, "sum": np.sum, "l2": np.linalg.norm,
        "rms": lambda v: float(np.sqrt(np.mean(np.square(v))))}
_MAGNITUDE = {"each": np.abs, "squared": np.square, "none": lambda v: v}
_DENOM = {"before": lambda a, b: a.std(axis=0).mean(), "pooled-before": lambda a, b: a.std(),
          "abs-mean-before": lambda a, b: np.abs(a.mean(axis=0)).mean(),
          "before-and-after": lambda a, b: (a.std(axis=0).mean() + b.std(axis=0).mean()) / 2, "abs-pooled-mean-before": lambda a, b: abs(a.mean()),
          "after": lambda a, b: b.std(axis=0).mean(), "none": lambda a, b: 1.0,
          "variance-before": lambda a, b: a.var(axis=0).mean(), "median-before": lambda a, b: np.median(a.std(axis=0))}


def _drift_measure(agg="mean", magnitude="each", denom="before", stds="per-unit"):
    """input_drift built from three choices: how the units' changes are summed up (``agg``), how a change
    is made positive (``magnitude``: "after" takes |.| of the aggregate), and what it is divided by."""
    def fn(h_before, h_after):
        a, b = np.asarray(h_before, np.float64), np.asarray(h_after, np.float64)
        dm, ds = b.mean(axis=0) - a.mean(axis=0), b.std(axis=0) - a.std(axis=0)
        if stds == "pooled":  # one std over every entry of the layer (np.std without axis)
            ds = np.atleast_1d(b.std() - a.std())
        if magnitude == "after":
            moved = abs(_AGG[agg](dm)) + abs(_AGG[agg](ds))
        else:
            moved = _AGG[agg](_MAGNITUDE[magnitude](dm)) + _AGG[agg](_MAGNITUDE[magnitude](ds))
        return float(moved / _DENOM[denom](a, b))
    return fn


_DRIFT_CHOICES = [  # (knob, value, name, hint): one choice of the measure turned the way a learner turns it
    ("stds", "pooled", "one std over all entries (pooled, np.std without axis) instead of one std per unit",
     "take each unit's std over the batch, h.std(axis=0), and average the units' |std change|; the std of the whole "
     "array also counts how far the units' means lie apart"),
    ("agg", "max", "the largest change over the units instead of the mean",
     "average each unit's |change| over the units (np.mean): the measure describes the whole layer, not its worst unit"),
    ("agg", "median", "the median of the changes over the units instead of their mean",
     "average each unit's |change| over the units (np.mean): the median ignores how far the units that moved most moved"),
    ("agg", "l2", "the l2 norm of the changes over the units instead of their mean",
     "average each unit's |change| over the units (np.mean), so the measure does not grow with the number of units"),
    ("agg", "sum", "the changes summed over the units instead of averaged",
     "average each unit's |change| over the units (np.mean), so the measure does not grow with the number of units"),
    ("agg", "rms", "the root-mean-square of the changes instead of the mean of their absolute values",
     "average the absolute changes: np.mean(np.abs(mean_after - mean_before))"),
    ("magnitude", "after", "the absolute value taken after averaging (units moving up and down cancel)",
     "take |change| of each unit first, then average: np.abs(mean_after - mean_before).mean()"),
    ("magnitude", "squared", "squared changes instead of absolute changes",
     "average the absolute changes, |mean_after - mean_before|, in the units of the activations (not squared)"),
    ("denom", "pooled-before", "divided by the spread of the whole array instead of the units' mean std",
     "divide by the mean over units of each unit's std before, h_before.std(axis=0).mean(); h_before.std() also "
     "counts how far the units' means lie apart"),
    ("denom", "median-before", "divided by the units' median std instead of their mean std",
     "divide by the mean over units of each unit's std before, h_before.std(axis=0).mean()"),
    ("denom", "variance-before", "divided by the units' variance instead of their std",
     "divide by h_before.std(axis=0).mean(), in the same units as the changes"),
    ("denom", "before-and-after", "divided by the mean of the spreads before and after instead of the spread before",
     "divide by the spread before only, h_before.std(axis=0).mean(): the drift is measured against where the input was"),
    ("denom", "abs-mean-before", "divided by the units' mean |mean| instead of their mean std",
     "divide by the spread before, h_before.std(axis=0).mean(): the size of the means says nothing about the spread "
     "(and is near zero for centred activations)"),
    ("denom", "abs-pooled-mean-before", "divided by the layer's |mean| instead of the units' mean std",
     "divide by the spread before, h_before.std(axis=0).mean(), not by the size of the mean"),
]


def _drift_choices() -> list[Mistake]:
    """Each choice alone, then every two choices of different knobs together (named by both)."""
    single = [Mistake(name, hint, _drift_measure(**{knob: value}), id=f"drift-{knob}-{value}")
              for knob, value, name, hint in _DRIFT_CHOICES]
    pairs = [Mistake(f"{n1}, and {n2}", f"{h1}; {h2}", _drift_measure(**{k1: v1, k2: v2}), id=f"drift-{k1}-{v1}")
             for i, (k1, v1, n1, h1) in enumerate(_DRIFT_CHOICES) for k2, v2, n2, h2 in _DRIFT_CHOICES[i + 1:]
             if k1 != k2]
    rng = np.random.default_rng(0)  # a probe: a pair that measures what an earlier entry measures says nothing new
    probe = (rng.normal(size=(20, 6)) * rng.uniform(0.5, 2, 6) + rng.normal(size=6),
             rng.normal(size=(20, 6)) * rng.uniform(0.5, 2, 6) + rng.normal(size=6))
    kept, seen = [], [_drift_measure()(*probe)]
    for m in single + pairs:
        value = m.fn(*probe)
        if all(abs(value - v) > 1e-9 * max(1.0, abs(v)) for v in seen):
            kept.append(m)
            seen.append(value)
    return kept


def _drift_rms(h_before, h_after):
    """The drift with each unit's "std" taken as sqrt(mean(h**2)), around zero instead of its mean."""
    a, b = np.asarray(h_before, np.float64), np.asarray(h_after, np.float64)
    sa, sb = np.sqrt((a * a).mean(0)), np.sqrt((b * b).mean(0))
    return float((np.abs(b.mean(0) - a.mean(0)).mean() + np.abs(sb - sa).mean()) / sa.mean())


def _per_unit_drift(h_before, h_after):
    """(|d mean| + |d std|) / mean std before, one value per unit (the mean over units left out)."""
    a, b = np.asarray(h_before, np.float64), np.asarray(h_after, np.float64)
    return (np.abs(b.mean(0) - a.mean(0)) + np.abs(b.std(0) - a.std(0))) / a.std(0).mean()


def _sorted_drift(axis):
    """Activations sorted and compared quantile by quantile (a distance between distributions, not the measure)."""
    def fn(h_before, h_after):
        a, b = np.asarray(h_before, np.float64), np.asarray(h_after, np.float64)
        if axis is None:
            diff = np.sort(b, axis=None) - np.sort(a, axis=None)
        else:
            diff = np.sort(b, axis=axis) - np.sort(a, axis=axis)
        return float(np.mean(np.abs(diff)) / a.std(axis=0).mean())
    return fn


_SORTED = ("sorted activations compared quantile by quantile{}, not the units' means and stds",
           "the measure compares two numbers per unit: (mean |mean_after - mean_before| + mean |std_after - std_before|) "
           "/ mean(std_before), with mean and std over the batch (axis=0)")
_PRECEDENCE = ("only the {} change divided by the spread (operator precedence)",
               "put both changes in brackets before dividing: (mean |d mean| + mean |d std|) / mean(std before)")


def drift_mistakes() -> list[Mistake]:
    """The known wrong ways to measure a layer's input drift, each written as a learner would."""
    return [
        Mistake(
            "activations compared, not distributions",
            "compare each unit's mean and std over the batch, not example by example: "
            "|h_after - h_before| measures how single activations moved",
            lambda a, b: float(np.mean(np.abs(np.asarray(b, float) - np.asarray(a, float)))
                               / np.mean(np.asarray(a, float).std(axis=0))),
        ),
        Mistake(
            "statistics over the wrong axis",
            "each unit (column) has its own mean and std over the batch: reduce over axis=0",
            _drift(axis=1),
        ),
        Mistake(
            "one mean and std for the whole layer",
            "take a mean and std per unit (axis=0), then average their changes over the units",
            _drift(pooled=True),
        ),
        Mistake(
            "signed changes (units moving up and down cancel)",
            "take the absolute value of each unit's change before averaging: np.abs(mean_after - mean_before)",
            _drift(absolute=False),
        ),
        Mistake(
            "signed change of the std (no absolute value on the std's change)",
            "take the absolute value of each unit's std change too: np.abs(std_after - std_before)",
            _drift(absolute="means"), id="drift-signed",
        ),
        Mistake(
            "signed change of the mean (no absolute value on the mean's change)",
            "take the absolute value of each unit's mean change too: np.abs(mean_after - mean_before)",
            _drift(absolute="stds"), id="drift-signed",
        ),
        *(Mistake(_PRECEDENCE[0].format(which), _PRECEDENCE[1], _drift(relative=f"{which}s only"), id="drift-precedence")
          for which in ("std", "mean")),
        *(Mistake(_SORTED[0].format(where), _SORTED[1], _sorted_drift(axis), id="drift-sorted")
          for axis, where in ((0, " (each unit sorted over the batch)"), (None, " (the whole layer sorted)"),
                              (-1, " (each example's units sorted)"))),
        Mistake(
            "one value per unit returned instead of one number",
            "average over the units too: (mean over units of |d mean| + mean over units of |d std|) / mean(std before) "
            "is a single number", lambda a, b: _per_unit_drift(a, b), id="drift-per-unit-array",
        ),
        Mistake(
            "absolute value of the sum of the two changes (|d mean + d std| instead of |d mean| + |d std|)",
            "take each change's absolute value on its own: mean |mean_after - mean_before| + mean |std_after - std_before|; "
            "a mean moving up and a std moving down must not cancel",
            lambda a, b: float(np.mean(np.abs(np.mean(b, 0) - np.mean(a, 0) + np.std(b, 0) - np.std(a, 0)))
                               / np.mean(np.std(a, 0))), id="drift-signed"),
        Mistake(
            "std computed without centring (root mean square of the activations)",
            "the standard deviation is taken around each unit's mean: np.std(h, axis=0), not sqrt(mean(h**2))",
            _drift_rms, id="drift-std-uncentred"),
        Mistake(
            "only the stds compared (the change of the means left out)",
            "add the mean change of each unit's mean: a distribution can move without widening",
            lambda a, b: float(np.mean(np.abs(np.std(b, 0) - np.std(a, 0))) / np.mean(np.std(a, 0))), id="drift-one-term",
        ),
        Mistake(
            "the change of the variances, with the stds' spread as the denominator",
            "compare standard deviations, in the units of the activations: |std_after - std_before| "
            "(np.std), not |var_after - var_before|",
            lambda a, b: float((np.mean(np.abs(np.mean(b, 0) - np.mean(a, 0))) + np.mean(np.abs(np.var(b, 0) - np.var(a, 0))))
                               / np.mean(np.std(a, 0))), id="drift-variance",
        ),
        Mistake(
            "not relative to the input's spread",
            "divide by the mean std of h_before, so layers with large and small activations compare",
            _drift(relative="none"),
        ),
        Mistake(
            "each unit's change relative to its own spread, then averaged (per unit, not pooled)",
            "average the changes over the units first, then divide by the mean std of h_before: "
            "(mean |d mean| + mean |d std|) / mean(std before); dividing unit by unit lets units with a tiny spread dominate",
            _drift(relative="per unit"), id="relative-per-unit",
        ),
        Mistake(
            "divided by the spread after instead of before",
            "divide by the mean std of h_before (where the input was)",
            _drift(relative="after"),
        ),
        Mistake(
            "sample standard deviation (ddof=1)",
            "use the population std over the batch (np.std's default, ddof=0)",
            _drift(ddof=1),
        ),
        Mistake(
            "variance instead of standard deviation",
            "compare standard deviations (np.std), in the same units as the means",
            _drift(power=2.0),
        ),
        Mistake(
            "only the means compared",
            "add the mean change of each unit's std: a distribution can widen without its mean moving",
            _drift(stds=False),
        ),
        *_drift_choices(),
    ]


def _bn(x, gamma, beta, eps=1e-5, axis=0, slip=""):
    """Batch norm (float64) over ``axis`` with one shared slip (``catalogue.shared``)."""
    return affine(standardize(np.asarray(x, dtype=np.float64), axis, eps, slip), gamma, beta, slip)


def _noisy(slip="", axis=0):
    """Noisy batch norm, scale * bn(x) + shift, with the slip inside bn."""
    return lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps, axis, slip) + m


def noisy_mistakes() -> list[Mistake]:
    """The known wrong ways to write noisy batch norm, each written as a learner would."""
    return [
        Mistake(
            "noise injected before normalizing (the normalization removes it)",
            "normalize first, then apply the noise: scale * (gamma * x_hat + beta) + shift; a per-feature "
            "scale and shift of x are exactly what batch norm takes out",
            lambda x, g, b, s, m, eps=1e-5: _bn(s * np.asarray(x, float) + m, g, b, eps),
        ),
        Mistake(
            "noise left out (plain batch norm)",
            "multiply batch norm's output by scale and add shift, per feature",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps),
        ),
        Mistake(
            "noise scale added instead of multiplied",
            "scale multiplies batch norm's output; only shift is added: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps) + s + m,
        ),
        Mistake(
            "scale and shift swapped",
            "scale multiplies, shift is added: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: m * _bn(x, g, b, eps) + s,
        ),
        Mistake(
            "noise applied to x_hat, before gamma and beta",
            "the noise comes after the whole batch norm layer: scale * (gamma * x_hat + beta) + shift",
            lambda x, g, b, s, m, eps=1e-5: g * (s * _bn(x, 1.0, 0.0, eps) + m) + b,
        ),
        Mistake(
            "shift forgotten",
            "add shift after scaling: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps),
        ),
        Mistake(
            "scale forgotten",
            "multiply by scale before adding shift: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps) + m,
        ),
        mistake("wrong-axis", _noisy(axis=1),
                hint="each feature (column) is normalized over the batch: mean and variance over axis=0"),
        Mistake("one mean and variance for the whole array (not per feature)",
                "each feature (column) has its own mean and variance over the batch: pass axis=0",
                _noisy(axis=None), id="wrong-axis"),
        Mistake("variance over the whole array (axis missing in the variance)",
                "the mean is per feature, but the variance was taken over the whole array: pass axis=0 to the "
                "variance too", lambda x, g, b, s, m, eps=1e-5: s * (g * (np.asarray(x, float) - np.mean(x, 0))
                                                                    / np.sqrt(np.var(x) + eps) + b) + m,
                id="wrong-axis"),
        mistake("beta-scaled-by-gamma", _noisy("beta-scaled-by-gamma")),
        mistake("unbiased-variance", _noisy("unbiased-variance"),
                hint="batch norm normalizes with the biased batch variance (divide by N, np.var's default ddof=0)"),
        mistake("eps-outside-sqrt", _noisy("eps-outside-sqrt"),
                hint="x_hat = (x - mean) / sqrt(var + eps), with eps inside the square root"),
        mistake("eps-missing", _noisy("eps-missing")),
        mistake("eps-hard-coded", _noisy("eps-hard-coded"), name="eps argument ignored (hard-coded 1e-5)"),
        mistake("gamma-beta-swapped", _noisy("gamma-beta-swapped"),
                hint="gamma scales and beta shifts: bn(x) = gamma * x_hat + beta"),
        mistake("divided-by-variance", _noisy("divided-by-variance")),
        mistake("sqrt-of-std", _noisy("sqrt-of-std")),
        *(mistake(slip, _noisy(slip)) for slip in ("gamma-and-beta-not-applied", "gamma-not-applied-only-beta-added",
                                                    "beta-not-added-only-gamma-applied", "mean-not-subtracted")),
        Mistake("shift multiplied instead of added",
                "scale multiplies, shift is added: scale * bn(x) + shift",
                lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps) * m, id="noise-order"),
        Mistake("divided by the noise scale instead of multiplied",
                "scale multiplies batch norm's output: scale * bn(x) + shift",
                lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps) / s + m, id="noise-order"),
        Mistake("shift added before scaling (scale * (bn(x) + shift))",
                "scale batch norm's output first, then add the shift: scale * bn(x) + shift",
                lambda x, g, b, s, m, eps=1e-5: s * (_bn(x, g, b, eps) + m), id="noise-order"),
        Mistake("beta left out of the scaling (scale * gamma * x_hat + beta + shift)",
                "the noise multiplies the whole layer's output, beta included: scale * (gamma * x_hat + beta) + shift",
                lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, 0.0, eps) + b + m, id="noise-order"),
    ]


def _wrapped(entries, wrap):
    """The entries with each wrong implementation's result shaped as the check compares it."""
    return [Mistake(m.name, m.hint, wrap(m.fn), m.only, m.id) for m in entries]


ENTRIES = {"input_drift": lambda: _wrapped(drift_mistakes(), _number_as_array),
           "noisy_batchnorm_forward": noisy_mistakes}
