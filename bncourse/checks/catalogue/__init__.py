"""The catalogue of known mistakes: the one place the checks' wrong implementations live.

Each entry is a ``Mistake`` (a small wrong implementation that reproduces one mistake as a learner
makes it, with the name and hint the learner reads and a stable short ``id`` that keys hints) or a
``Symptom`` (a named property of the learner's outputs). A check does not import its entries: it
hands ``lazy(exercise)`` to ``check_function``, which asks for them only to diagnose a failure.
Grading kernels get a solution-free build in which this package is a stub: the checks' modules
import and make their cases without it.

    mistakes("batchnorm_forward")   -> [Mistake(...), ...] in the order the check tries them
    exercises()                     -> every exercise the catalogue has entries for

One module per notebook holds the entries of that notebook's exercises (``ENTRIES``: exercise ->
list); ``shared`` holds the transformations several exercises share (the normalizing core with the
knobs mistakes turn, in-place changes seen through aliases).
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["mistakes", "lazy", "exercises"]

# exercise -> the catalogue module holding its entries
_WHERE = {
    "standardize": "normalize", "min_max_scale": "normalize",
    "batchnorm_forward": "batchnorm_forward", "update_running_stats": "batchnorm_forward",
    "batchnorm_inference": "batchnorm_forward",
    "batchnorm_backward": "batchnorm_backward", "spatial_batchnorm_forward": "spatial_batchnorm",
    "spatial_batchnorm_backward": "spatial_batchnorm",
    "BatchNormFunction": "pytorch", "BatchNorm1dNumpy": "pytorch", "BatchNorm2d": "pytorch",
    "sigmoid_input_percentiles": "figure1", "recompute_bn_statistics": "recompute",
    "input_drift": "what_bn_does", "gradient_change": "gradient_change", "noisy_batchnorm_forward": "what_bn_does",
    "sync_batch_norm_forward": "sync_batchnorm", "sync_batch_norm_backward": "sync_batchnorm",
    "layernorm_forward": "norm_family", "layernorm_backward": "norm_family",
    "groupnorm_forward": "groupnorm", "groupnorm_backward": "groupnorm",
    "fold_batchnorm": "folding", "fold_model": "folding",
    "saturated_fraction": "diagnostics", "update_to_data_ratio": "diagnostics",
}


def exercises() -> list[str]:
    return list(_WHERE)


def mistakes(exercise: str) -> list:
    """The catalogue's entries for ``exercise``, in the order its check tries them."""
    if exercise not in _WHERE:
        raise KeyError(f"the catalogue has no entries for {exercise!r}; known: {', '.join(_WHERE)}")
    module = importlib.import_module(f"{__name__}.{_WHERE[exercise]}")
    entries = module.ENTRIES[exercise]
    return list(entries() if callable(entries) else entries)


def lazy(exercise: str) -> Callable[[], list]:
    """``mistakes(exercise)``, asked for only when a check diagnoses a failure."""
    def entries() -> list:
        return mistakes(exercise)
    entries.__qualname__ = f"mistakes[{exercise}]"
    return entries
