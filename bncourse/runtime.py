"""What a notebook's work is sized by: ``pick(fast=..., full=...)`` for the run's size (``RunSize``).

Notebooks read it as ``from bncourse.runtime import FAST, pick`` and size their work with
``pick(fast=..., full=...)``. The test command sets ``BNCOURSE_FAST=1``; learners leave it unset.

A third size exists for autograding: ``BNCOURSE_GRADING=1`` (set by the grading pipeline for the
grading kernel, ``RunSize.GRADING.kernel_env()``) means "fast, and experiments whose outputs earn
no points may shrink further": ``pick(fast=..., full=..., grading=...)`` returns ``grading`` then.
A notebook gives ``grading=`` only where no graded cell depends on the value; without it, the
grading size is the fast size.

A fourth size exists for a learner without a GPU: a notebook whose full run would take more than
about 10 minutes on a CPU gives ``pick(fast=..., full=..., cpu=..., what="...")``. In a full-size
run on a machine without a GPU (``bncourse.device`` finds neither cuda nor mps) it returns ``cpu``
and prints once what was scaled down and how to get the full size (a GPU, or
``BNCOURSE_FULL_ON_CPU=1``). Fast and grading runs never see it.

Where the size comes from is ``bncourse.run_size`` (``RunSize``, ``current_size``, ``use_size``;
re-exported here). Nothing is read at import: ``FAST`` is looked up when a notebook imports it.
"""

from __future__ import annotations

import os
from typing import TypeVar

from bncourse.run_size import (  # noqa: F401 - the names notebooks and experiments import from here
    FAST_ENV, GRADING_ENV, RunSize, current_size, fast_mode, grading_mode, switched_on, use_size)

T = TypeVar("T")

FULL_ON_CPU_ENV = "BNCOURSE_FULL_ON_CPU"  # a learner who wants the full size on a CPU anyway


def __getattr__(name: str):
    # ``from bncourse.runtime import FAST``: the size at the moment of the import, never frozen
    # when this module was first imported.
    if name == "FAST":
        return fast_mode()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_UNSET = object()
_SCALED: dict[str, tuple] = {}  # what -> (full, cpu) already announced in this process


def full_on_cpu() -> bool:
    """True when the learner asked for the full size even without a GPU (``BNCOURSE_FULL_ON_CPU=1``)."""
    return switched_on(os.environ.get(FULL_ON_CPU_ENV))


def has_gpu() -> bool:
    """True when ``bncourse.device`` would train on a GPU (cuda or mps; ``BNCOURSE_DEVICE`` is honoured)."""
    from bncourse.device import get_device

    return get_device(announce=False).type != "cpu"


def pick(*, fast: T, full: T, grading: T = _UNSET, cpu: T = _UNSET, what: str = "") -> T:  # type: ignore[assignment]
    """The value for the current size: ``num_epochs = pick(fast=1, full=20)``.

    ``grading`` (optional) is used by grading kernels; it defaults to ``fast``.
    ``cpu`` (optional) replaces ``full`` in a full-size run without a GPU, unless
    ``BNCOURSE_FULL_ON_CPU=1``; ``what`` names the value in the note printed then, e.g.
    ``EPOCHS = pick(fast=4, full=15, cpu=3, what="epochs per CNN")``.
    """
    size = current_size()
    if size is RunSize.GRADING and grading is not _UNSET:
        return grading
    if size.fast:
        return fast
    if cpu is not _UNSET and not full_on_cpu() and not has_gpu():
        _announce_cpu_size(what, full, cpu)
        return cpu
    return full


def _announce_cpu_size(what: str, full, cpu) -> None:
    """Print, once per value, what the CPU run scales down and how to get the full size."""
    key = what or repr((full, cpu))
    if key in _SCALED:
        return
    first = not _SCALED
    _SCALED[key] = (full, cpu)
    if first:
        print("No GPU found: this notebook's full run would take too long on a CPU, so it is scaled down.\n"
              f"  For the full run: a CUDA or Apple GPU, or {FULL_ON_CPU_ENV}=1 before starting JupyterLab.")
    print(f"  scaled down for the CPU: {what or 'a size'} = {cpu!r} (full run: {full!r})")


def cpu_scaled() -> dict[str, tuple]:
    """What this process scaled down for the CPU so far: ``{what: (full, cpu)}``."""
    return dict(_SCALED)
