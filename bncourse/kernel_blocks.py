"""What a torch notebook's grading kernel blocks before any learner code runs (the kernel side).

The torch notebooks' grading kernels need torch, so torch cannot simply be absent as it is for the
numpy notebooks. Instead the sandbox starts the kernel through ``launch(blocks)``, which installs
these blocks and only then starts ipykernel:

- ``"normalization"`` (notebook 4): every operator of torch's normalization family (batch, layer,
  group, instance and RMS norm, forward and backward, their ``.out`` and fused variants, in the
  ``aten``, ``quantized``, ``onednn`` namespaces) gets, at every dispatch key where torch has a
  kernel for it (CPU, the alias keys Autograd and CompositeImplicit/Explicit, MkldnnCPU,
  QuantizedCPU, NestedTensorCPU, FuncTorchBatched, Meta, ...), a kernel that raises
  ``LibraryNotAllowed``. Every Python name that reaches the operator (``F.batch_norm``,
  ``torch.__dict__['batch_norm']``, ``torch.ops.aten.native_batch_norm``, ``nn.BatchNorm1d``,
  ``vmap``, TorchScript, ``torch._C._VariableFunctions``) ends in the dispatcher, so it raises.
- ``"folding"`` (notebook 10): the C++ TorchScript passes that fold a batch norm into the layer
  before it (``torch._C._jit_pass_fold_frozen_conv_bn`` and the passes that run it:
  ``torch.jit.freeze``'s optimizations, ``optimize_for_inference``, ONNX's peephole) are replaced
  in ``torch._C`` by a function that raises, so nothing refers to the originals any more.

Python implementations inside torch (its decompositions, ``torch.nn.utils.fusion``, ...) are not
blocked here: the sandbox mounts rewritten copies of their files (``bncourse.grading.libraries``).

Undoing a block from learner code: the registrations live in ``torch._C._DispatchModule`` handles
(C++ objects the garbage collector does not track) to which no Python object refers: this module
keeps one reference of its own to each with ``Py_IncRef`` and drops every Python name of them, so
neither ``gc.get_objects()`` nor a walk of referents finds one to ``_destroy`` or reset. A kernel a
learner registers over ours with ``torch.library`` is the learner's own code; falling through
(``fallthrough_kernel``) reaches our kernel at the next key or none. Nothing here depends on
``sys.setprofile``: switching the profiler off changes nothing.

This module imports only torch (never ``bncourse.grading``, which imports nbgrader).
"""

from __future__ import annotations

import re
import warnings

__all__ = ["BLOCKS", "LibraryNotAllowed", "NORMALIZATION", "install", "launch", "launch_code"]

BLOCKS = ("normalization", "folding")
# Operators of torch's normalization family, by their name without namespace and overload.
NORMALIZATION = re.compile(r"(batch_?norm|layer_?norm|group_?norm|instance_?norm|rms_?norm)")
NAMESPACES = ("aten", "quantized", "onednn", "mkldnn")
JIT_FOLDING = ("_jit_pass_fold_frozen_conv_bn", "_jit_pass_fold_frozen_linear_bn", "_jit_pass_fold_convbn",
               "_jit_pass_optimize_frozen_graph", "_jit_pass_optimize_for_inference", "_jit_pass_onnx_eval_peephole")
RULE = {
    "normalization": "torch's own normalization (batch, layer, group, instance or RMS norm: nn.BatchNorm*, "
                     "F.batch_norm, torch.ops.aten.*, however it is reached) is not available while grading this "
                     "notebook: the exercise asks for your own, from torch's tensor operations "
                     "(see the rule in the notebook)",
    "folding": "torch's own batch-norm folding is not available while grading this notebook: the exercise asks "
               "for your own (see the rule in the notebook)",
}


class LibraryNotAllowed(RuntimeError):
    """Raised in a grading kernel by a library implementation the notebook's rule leaves out."""


def _refuse_normalization(*args, **kwargs):
    raise LibraryNotAllowed(RULE["normalization"])


def _keys_of(qualified: str) -> set[str]:
    """Dispatch keys where ``qualified`` (``ns::name.overload``) has a kernel, plus the composite alias."""
    import torch

    keys = {"CompositeImplicitAutograd"}
    for line in torch._C._dispatch_dump(qualified).splitlines():
        head, sep, _ = line.partition(": registered at")
        if sep and not head.startswith("debug"):
            keys.add(head.replace("[alias]", "").strip())
    return keys


def normalization_ops() -> list[str]:
    """Every registered operator of the normalization family (``ns::name`` or ``ns::name.overload``)."""
    import torch

    found = []
    for qualified in torch._C._dispatch_get_all_op_names():
        ns, _, name = qualified.partition("::")
        if ns in NAMESPACES and NORMALIZATION.search(name.split(".")[0]):
            found.append(qualified)
    return sorted(found)


def _keep_alive_unreachable(obj) -> None:
    """One strong reference that no Python object holds: the object lives until the process ends.

    A grading kernel has no ctypes (the sandbox masks ``_ctypes``): there the reference count
    (``ob_refcnt``, the object's first word) is raised through a numpy array over it."""
    try:
        import _ctypes  # noqa: F401  (the real FFI, outside the sandbox)
        import ctypes
    except ImportError:
        import numpy as np

        word = np.dtype(np.intp)

        class _RefCount:
            __array_interface__ = {"shape": (1,), "typestr": word.str, "data": (id(obj), False), "version": 3}

        count = np.asarray(_RefCount())
        count[0] += 1
        return
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _block_normalization() -> int:
    import torch

    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for qualified in normalization_ops():
            ns, _, name = qualified.partition("::")
            for key in sorted(_keys_of(qualified)):
                try:
                    module = torch._C._dispatch_library("IMPL", ns, key, "bncourse-grading", 0)
                except RuntimeError:  # a key this build cannot register for
                    continue
                module.impl(name, key, _refuse_normalization, False)
                _keep_alive_unreachable(module)
                del module
                count += 1
    return count


def _refuse_folding(*args, **kwargs):
    raise LibraryNotAllowed(RULE["folding"])


def _block_folding() -> int:
    """The folding passes replaced in ``torch._C`` (the originals, referred to by nothing else, are freed)."""
    import torch

    count = 0
    for name in JIT_FOLDING:
        if hasattr(torch._C, name):
            setattr(torch._C, name, _refuse_folding)
            count += 1
    return count


def _dispatcher_refuses_batch_norm(torch) -> bool:
    """True if torch's dispatcher already answers batch norm with this rule's refusal."""
    try:
        torch.ops.aten.native_batch_norm(torch.zeros(2, 1), None, None, None, None, True, 0.1, 1e-5)
    except Exception as error:  # noqa: BLE001 (whatever the dispatcher raised, only ours counts)
        return type(error).__name__ == "LibraryNotAllowed"
    return False


def install(blocks) -> dict[str, int]:
    """Install ``blocks`` (names in ``BLOCKS``) in this process: what each blocked, counted."""
    unknown = sorted(set(blocks) - set(BLOCKS))
    if unknown:
        raise ValueError(f"unknown blocks {unknown}: expected some of {BLOCKS}")
    done = {}
    if "normalization" in blocks:  # in a sandbox whose torch installs blocks on import
        import torch  # (bncourse.grading.torch_import_blocks) they may be in place already: asked of the
        # dispatcher itself, never of a marker a learner's own copy of torch's __init__ can set (red team 4)

        if _dispatcher_refuses_batch_norm(torch):
            blocks = [b for b in blocks if b != "normalization"]
    if "normalization" in blocks:
        done["normalization"] = _block_normalization()
    if "folding" in blocks:
        done["folding"] = _block_folding()
    return done


def launch_code(blocks) -> str:
    """``python -c`` code that installs ``blocks`` and then runs ipykernel as ``-m ipykernel_launcher`` would."""
    return ("import sys\n"
            "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"  # never import from the submission
            "from bncourse.kernel_blocks import launch\n"
            f"launch({tuple(blocks)!r})\n")


def launch(blocks) -> None:
    """Install ``blocks``, then start the ipykernel whose command-line arguments this process has."""
    install(blocks)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
