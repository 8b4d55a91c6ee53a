"""Which libraries a graded solution may use, per assignment, as the grading sandbox enforces it.

The rule of each notebook is written in the notebook, next to its exercises, and in
docs/instructors.md; this module is what the sandbox does about it, never a reading of the source:

- the numpy notebooks (1, 2, 3, 7 and 9): torch, torchvision, scikit-learn and SciPy are absent
  from the grading kernel (their folders in site-packages are replaced by a package whose import
  raises ``ImportError``), so no normalization of theirs can stand in for the learner's code,
  whatever name reaches it;
- notebook 4 (batch norm in PyTorch): torch is there, its normalization is not. The kernel starts
  through ``bncourse.kernel_blocks`` (block ``"normalization"``), which overrides every operator
  of torch's normalization family in torch's dispatcher with a kernel that raises; the Python
  implementations of those operators inside torch (its decompositions and references) are mounted
  as rewritten copies whose normalization functions raise (``overlays``), .pyc files included;
- notebook 10 (folding): torch and its batch norm are there; torch's folding is not (block
  ``"folding"``: the C++ TorchScript folding passes are replaced by a function that raises, and ``torch.nn.utils.fusion`` and
  the other Python folds in torch are mounted as rewritten copies).
- notebook 8 (across devices): torch and torch.distributed are there, torch's normalization is not
  (block ``"normalization"``, as notebook 4), in the kernel, in every rank the check starts
  (``bncourse.checks.sync_batchnorm`` installs it before the learner's function runs) and in every
  other process that imports torch (``bncourse.grading.torch_import_blocks``). The only assignment
  whose kernel may start processes (``"processes": True``; every other kernel can start none:
  ``bncourse.grading.seccomp.seccomp_filter``).
- notebook 6 (CNNs): torch and its batch norm layers (their ``reset_running_stats``, ``momentum``,
  ``train()``) are there; torch's own implementation of the exercise, ``torch.optim.swa_utils.update_bn``,
  is not (overlay ``"update_bn"``: ``swa_utils.py`` mounted as a rewritten copy whose ``update_bn``
  raises ``LibraryNotAllowed``; the rest of ``swa_utils``, SWA's averaged models, still works).

A rewritten function raises ``bncourse.kernel_blocks.LibraryNotAllowed`` (a ``RuntimeError``) with
the rule's words.

``LIBRARY_RULES``: assignment -> {"allowed", "blocked", "torch_blocks", "overlays", "processes", "reason"}
(``overlays``: blocks that only rewrite torch's Python files, with no dispatcher block; ``processes``: True
when grading needs the kernel to start processes, default False).
``blocked_for(assignment)``: the top-level packages its grading kernels cannot import.
``sandbox_options(assignment)``: the ``Sandbox`` fields that enforce its rule.
``overlays(blocks)``: (rewritten file, the file of torch it is mounted over), built once per torch.
"""

from __future__ import annotations

import ast
import hashlib
import py_compile
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bncourse.grading.sandbox_view import publish_for_sandbox

__all__ = ["LIBRARY_RULES", "OVERLAID", "blocked_for", "neutralized_source", "overlays", "sandbox_options",
           "torch_blocks_for"]

NUMPY_ONLY = ("numpy", "matplotlib", "the Python standard library")
NUMPY_BLOCKED = ("torch", "torchvision", "functorch", "sklearn", "scipy")
NUMPY_REASON = "its exercises are to be written with numpy (see the notebook's rule)"
TORCH_ALLOWED = ("numpy", "torch's tensor operations, autograd and nn.Module", "matplotlib",
                 "the Python standard library")

LIBRARY_RULES: dict[str, dict] = {
    "01_why_normalize": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED, "reason": NUMPY_REASON},
    "02_batchnorm_forward": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED, "reason": NUMPY_REASON},
    "03_batchnorm_backward": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED, "reason": NUMPY_REASON},
    "04_batchnorm_pytorch": {"allowed": TORCH_ALLOWED, "blocked": ("torchvision", "sklearn", "scipy"),
                             "torch_blocks": ("normalization",),
                             "reason": "its exercises are to be written with numpy and torch's tensor operations, "
                                       "without torch's own normalization (see the notebook's rule)"},
    "07_what_batchnorm_does": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED, "reason": NUMPY_REASON},
    "09_beyond_batchnorm": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED, "reason": NUMPY_REASON},
    "06_cnns_gpu": {"allowed": TORCH_ALLOWED + ("nn.BatchNorm*'s own methods and attributes (reset_running_stats, "
                                                "momentum, train/eval)", "scikit-learn's data sets"),
                    "overlays": ("update_bn",),
                    "reason": "the exercise recompute_bn_statistics is to be written with torch's modules and tensor "
                              "operations, without torch's own implementation of it, "
                              "torch.optim.swa_utils.update_bn (see the notebook's rule)"},
    "08_batchnorm_across_devices": {
        "allowed": TORCH_ALLOWED + ("torch.distributed's collectives (all_reduce, all_gather, broadcast ...)",
                                    "bncourse.distributed and bncourse.nn_sync's SyncBNCache"),
        "torch_blocks": ("normalization",), "processes": True,
        "reason": "its exercises are to be written with torch's tensor operations and torch.distributed's "
                  "collectives, without torch's own batch norm (native_batch_norm, batch_norm_gather_stats, "
                  "batch_norm_elemt, batch_norm_backward_reduce/elemt, F.batch_norm, nn.SyncBatchNorm; see the "
                  "notebook's rule)"},
    "10_folding": {"allowed": TORCH_ALLOWED + ("nn.BatchNorm* themselves",), "blocked": ("sklearn", "scipy"),
                   "torch_blocks": ("folding",),
                   "reason": "its exercises are to be written with torch's tensor operations, without torch's own "
                             "folding (see the notebook's rule)"},
}

# Python files inside torch that implement what a block forbids: file (relative to torch's folder)
# -> a pattern of the function names (at any depth) whose bodies are replaced by a raise.
_NORM = r"(batch_?norm|layer_?norm|group_?norm|instance_?norm|rms_?norm)"
OVERLAID: dict[str, dict[str, str]] = {
    "normalization": {
        "_decomp/decompositions.py": _NORM,
        "_decomp/decompositions_for_jvp.py": _NORM,
        "_refs/__init__.py": _NORM + r"|^_normalize$",
        "_refs/nn/functional/__init__.py": _NORM,
        "_inductor/decomposition.py": _NORM,
        "testing/_internal/common_methods_invocations.py": r"^reference_.*" + _NORM,
        "testing/_internal/common_modules.py": _NORM + r".*reference",
        "nested/_internal/ops.py": _NORM,
    },
    "folding": {
        "nn/utils/fusion.py": r"^fuse_",
        "_inductor/fx_passes/efficient_conv_bn_eval.py": r"^efficient_conv_bn_eval",
        "_inductor/fx_passes/pre_grad.py": r"^fuse_conv_bn",
        "ao/nn/intrinsic/qat/modules/conv_fused.py": r"^_forward_approximate$|^_forward_slow$",
        "ao/nn/intrinsic/qat/modules/linear_fused.py": r"^forward$",
    },
    "update_bn": {
        "optim/swa_utils.py": r"^update_bn$",
    },
}
_MESSAGES = {
    "normalization": "torch's own normalization is not available while grading this notebook: write your own "
                     "(see the rule in the notebook)",
    "folding": "torch's own batch-norm folding is not available while grading this notebook: write your own "
               "(see the rule in the notebook)",
    "update_bn": "torch.optim.swa_utils.update_bn (torch's own implementation of recompute_bn_statistics) is not "
                 "available while grading this notebook: the exercise asks for your own, from the batch norm "
                 "layers' reset_running_stats, momentum and train() (see the rule in the notebook)",
}
# What a rewritten function's body becomes (its message: _MESSAGES[block]).
_RAISE = 'raise __import__("bncourse.kernel_blocks", fromlist=["LibraryNotAllowed"]).LibraryNotAllowed({message!r})'



def blocked_for(assignment: str, rules: dict | None = None) -> tuple[str, ...]:
    """Top-level packages absent from ``assignment``'s grading kernels (none for an unknown one)."""
    rule = (LIBRARY_RULES if rules is None else rules).get(assignment) or {}
    return tuple(rule.get("blocked", ()))


def torch_blocks_for(assignment: str, rules: dict | None = None) -> tuple[str, ...]:
    """``bncourse.kernel_blocks`` blocks installed in ``assignment``'s grading kernels."""
    rule = (LIBRARY_RULES if rules is None else rules).get(assignment) or {}
    return tuple(rule.get("torch_blocks", ()))


def sandbox_options(assignment: str, rules: dict | None = None) -> dict:
    """The ``Sandbox`` fields that enforce ``assignment``'s rule: blocked, blocked_reason, torch_blocks, overlays."""
    rule = (LIBRARY_RULES if rules is None else rules).get(assignment) or {}
    blocks = torch_blocks_for(assignment, rules)
    rewritten = tuple(sorted({*blocks, *rule.get("overlays", ())}))
    return {"blocked": blocked_for(assignment, rules),
            "blocked_reason": f"is not available while grading {assignment}: "
                              + str(rule.get("reason", "see the notebook's rule")),
            "torch_blocks": blocks, "overlays": (overlays(rewritten) if rewritten else ()) + _in_every_process(rule),
            "processes": bool(rule.get("processes", False))}


def _in_every_process(rule: dict) -> tuple[tuple[str, str], ...]:
    """For a kernel that may start processes: torch's ``__init__`` that installs the rule's blocks in every
    process importing torch (``bncourse.grading.torch_import_blocks``)."""
    if not (rule.get("processes") and rule.get("torch_blocks")):
        return ()
    from bncourse.grading.torch_import_blocks import init_overlay

    return init_overlay(tuple(rule["torch_blocks"]))


def neutralized_source(text: str, pattern: str, message: str) -> tuple[str, list[str]]:
    """``text`` with the body of every function whose name matches ``pattern`` replaced by a raise.

    Decorators, signatures and every other line stay as they are (imports and registrations still
    work). Returns (new source, the names neutralized)."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    regex = re.compile(pattern)
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and regex.search(node.name):
            first = node.body[0]
            if first.lineno == node.lineno:  # `def f(): return x` on one line
                raise ValueError(f"cannot rewrite the one-line function {node.name}")
            spans.append((first.lineno, node.end_lineno, first.col_offset, node.name))
    spans.sort()
    kept, names, last_end = [], [], 0
    for start, end, col, name in spans:
        if start <= last_end:  # nested in a function already rewritten
            continue
        names.append(name)
        kept.append((start, end, col))
        last_end = end
    for start, end, col in reversed(kept):
        lines[start - 1:end] = [" " * col + _RAISE.format(message=message) + "\n"]
    return "".join(lines), names


def _torch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    return Path(spec.origin).resolve().parent if spec and spec.origin else None


def overlays(blocks) -> tuple[tuple[str, str], ...]:
    """(rewritten copy, torch's file it is mounted over) for ``blocks``, .pyc files included.

    A rewritten file's bytecode is compiled against the copy (its time stamp and size), and mounted
    over every .pyc of the original, so a learner who loads a .pyc by hand (``marshal``) gets the
    rewritten code too. Built once per torch installation, in the grading cache."""
    from bncourse.grading.solution_free import cache_dir

    torch_dir = _torch_dir()
    if torch_dir is None or not blocks:
        return ()
    files = {rel: (block, pattern) for block in sorted(blocks) for rel, pattern in OVERLAID.get(block, {}).items()}
    h = hashlib.sha256(repr((sorted(files.items()), sorted(_MESSAGES.items()), _RAISE,
                             sys.implementation.cache_tag)).encode())
    for rel in sorted(files):
        src = torch_dir / rel
        if src.is_file():
            st = src.stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    target = cache_dir() / "overlays" / h.hexdigest()[:20]
    if not (target / "done").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            for rel, (block, pattern) in sorted(files.items()):
                src = torch_dir / rel
                if not src.is_file():
                    continue
                text, names = neutralized_source(src.read_text(), pattern, _MESSAGES[block])
                if not names:
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
                py_compile.compile(str(out), cfile=str(out) + "c", dfile=str(src), doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
            (tmp / "done").write_text("")
            publish_for_sandbox(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    binds = []
    for rel in sorted(files):
        out, src = target / rel, torch_dir / rel
        if not out.is_file():
            continue
        binds.append((str(out), str(src)))
        cache = src.parent / "__pycache__"
        for pyc in sorted(cache.glob(f"{src.stem}.*.pyc")) if cache.is_dir() else ():
            binds.append((str(out) + "c", str(pyc)))
    return tuple(binds)
