"""Delegation: a learner's code that hands an exercise to the course's own implementation.

An exercise asks the learner to write something the package already holds (``standardize`` in
``bncourse.reference.normalize``, ``BatchNorm2d`` in ``bncourse.nn``, ...). A function that
calls that implementation, or a class that subclasses it, earns no points, however it reached it
(an import, a module attribute, ``importlib``, ``exec`` of a string). In a numpy exercise, torch's
own normalization (``F.batch_norm``, ``nn.BatchNorm1d``, ``layer_norm``, ...) is forbidden too; in a
torch exercise, torch's batch norm. Building blocks a notebook hands out on purpose (notebook 4's
numpy ``batchnorm_forward``) have other names than the exercise, so they stay allowed.

Two independent ways to notice it, one rule (``Rule``):

- in the learner's kernel, ``Watch`` follows the calls the learner's function makes
  (``sys.setprofile``) and records the first one that reaches a forbidden implementation;
- in the grader, ``bncourse.grading.sources`` reads the submission's source and lists what each
  learner object refers to (dotted names such as ``bncourse.reference.normalize.standardize``, or
  ``<dynamic:exec>`` for code it cannot read); ``Rule.judge`` decides from that list. The grader's
  re-judging uses this, never the kernel's word.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

import bncourse

HINT = ("handed the exercise to an existing implementation (the course's own, or torch's normalization) "
        "instead of writing it; it scores 0 until your code does the work itself")

# torch's normalization: what a numpy exercise may not hand its work to.
TORCH_BATCH_NORM = frozenset({
    "batch_norm", "native_batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d", "SyncBatchNorm",
    "_BatchNorm", "_NormBase", "_LazyNormBase",
})
TORCH_NORMALIZATION = TORCH_BATCH_NORM | frozenset({
    "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "rms_norm",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "_InstanceNorm",
    "local_response_norm",
})
# torch's own batch-norm folding: what the folding exercise may not hand its work to.
TORCH_FOLDING = frozenset({"fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights"})
_TORCH_RULES = {"normalization": TORCH_NORMALIZATION, "batch_norm": TORCH_BATCH_NORM, "folding": TORCH_FOLDING,
                "": frozenset()}

_PKG = os.path.dirname(os.path.abspath(bncourse.__file__)) + os.sep
_CHECKS = os.path.join(_PKG, "checks") + os.sep


def forbidden_names(exercise: str, reference_fn: Callable | None, extra: Iterable[str] = ()) -> frozenset:
    """The exercise's own name, the reference's name (when it is the course's), and ``extra``."""
    names = {n for n in extra if n}
    head = exercise.split(" ")[0].split("(")[0]
    if head.isidentifier():
        names.add(head)
    module = str(getattr(reference_fn, "__module__", "") or "")
    ref_name = str(getattr(reference_fn, "__name__", "") or "")
    if module.startswith("bncourse.") and not module.startswith("bncourse.checks") and ref_name.isidentifier():
        names.add(ref_name)
    return frozenset(names)


@dataclass(frozen=True)
class Rule:
    """What one check forbids: the course's implementations named ``names``, and torch's ``torch_names``."""

    names: frozenset
    torch_names: frozenset

    @classmethod
    def of(cls, names: Iterable[str], forbid_torch: str = "normalization") -> "Rule":
        if forbid_torch not in _TORCH_RULES:
            raise ValueError(f"forbid_torch must be one of {sorted(_TORCH_RULES)}, got {forbid_torch!r}")
        return cls(frozenset(names), _TORCH_RULES[forbid_torch])

    def judge(self, references: Iterable[str]) -> str:
        """'' when none of ``references`` (dotted names from the grader's reading) is forbidden."""
        for ref in sorted(set(references)):
            if ref.startswith("<dynamic:"):
                return (f"code the grader cannot read ({ref[9:-1]}), which may hand the work to the course's "
                        "implementation")
            parts = ref.split(".")
            if parts[0] == "bncourse" and len(parts) > 1 and parts[1] != "checks" and parts[-1] in self.names:
                return ref
            if parts[0] == "torch" and parts[-1] in self.torch_names:
                return ref
        return ""


def _module_of(filename: str) -> str:
    rel = os.path.relpath(filename, os.path.dirname(_PKG.rstrip(os.sep)))
    return rel[:-3].replace(os.sep, ".") if rel.endswith(".py") else rel


def _in_torch(filename: str) -> bool:
    torch = sys.modules.get("torch")
    root = os.path.dirname(getattr(torch, "__file__", "") or "") if torch is not None else ""
    return bool(root) and filename.startswith(root + os.sep)


class Watch:
    """While active (``with watch:``), record the first call into a forbidden implementation (``found``)."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.found = ""
        self._old = None

    def __enter__(self):
        self.found = ""
        self._old = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._old)
        return False

    def _profile(self, frame, event, arg):
        if self.found:
            return
        if event == "call":
            code = frame.f_code
            qualname = getattr(code, "co_qualname", code.co_name)
            head = qualname.split(".")[0]
            path = code.co_filename
            if head in self.rule.names and path.startswith(_PKG) and not path.startswith(_CHECKS):
                self.found = f"{_module_of(path)}.{qualname}"
            elif head in self.rule.torch_names and _in_torch(path):
                self.found = f"torch's {qualname}"
        elif event == "c_call" and self.rule.torch_names:
            name = str(getattr(arg, "__name__", "") or "")
            if name in self.rule.torch_names and "torch" in str(getattr(arg, "__module__", "") or "torch"):
                self.found = f"torch.{name}"
