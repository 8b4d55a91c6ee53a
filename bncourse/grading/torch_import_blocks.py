"""The blocks in every Python process that imports torch, for an assignment whose kernel may start processes.

Notebook 8's kernel may start processes (its check runs the learner's functions on gloo ranks), so
the blocks of ``bncourse.kernel_blocks``, which live in one process's dispatcher, must reach every
process: the check's ranks install them before the learner's function runs
(``bncourse.checks.sync_batchnorm``), and a process the learner starts (``subprocess``,
``multiprocessing``, ``os.execv``, ``python -I``/``-S``) gets them from torch itself: its
``__init__.py`` (and its .pyc) is mounted as a copy with, at its end, the source of
``bncourse.kernel_blocks`` run in a namespace of its own and its ``install(blocks)``. Nothing in
the environment, ``sys.path`` or ``sys.modules`` switches it off; an import of torch whose
blocks cannot be installed fails.

What still bypasses it (docs/instructors.md, threat model): a process that does not run torch's
``__init__`` as the sandbox mounts it, e.g. one that loads torch's package from a copy of the
original ``__init__`` (its text is public, and the copy mounted here holds it before our lines).
"""

from __future__ import annotations

import hashlib
import py_compile
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["MARKER", "init_overlay", "init_source"]

MARKER = "_bncourse_blocked"  # torch.<MARKER>: the blocks installed when torch was imported

_TAIL = '''

# --- appended by the bncourse grading sandbox (bncourse.grading.torch_import_blocks): this notebook's
# library rule, in every process that imports torch ---
def _bncourse_install_blocks(blocks={blocks!r}, source={source!r}):
    import builtins  # torch's own names shadow some (torch.compile)

    namespace = {{"__name__": "bncourse_kernel_blocks_in_torch"}}
    builtins.exec(builtins.compile(source, "<bncourse.kernel_blocks>", "exec"), namespace)
    namespace["install"](blocks)
    return builtins.frozenset(blocks)


{marker} = _bncourse_install_blocks()
del _bncourse_install_blocks
'''


def init_source(original: str, blocks, kernel_blocks_source: str) -> str:
    """torch's ``__init__.py`` text ``original`` with the installation of ``blocks`` appended."""
    return original + _TAIL.format(blocks=tuple(blocks), source=kernel_blocks_source, marker=MARKER)


def init_overlay(blocks) -> tuple[tuple[str, str], ...]:
    """(rewritten copy, torch's file it is mounted over) for torch's ``__init__.py`` and its .pyc files;
    ``()`` without torch or blocks. Built once per torch and blocks, in the grading cache."""
    import importlib.util

    from bncourse.grading.sandbox_view import publish_for_sandbox
    from bncourse.grading.solution_free import cache_dir

    spec = importlib.util.find_spec("torch")
    if not blocks or spec is None or not spec.origin:
        return ()
    init = Path(spec.origin).resolve()
    blocks_file = Path(__file__).resolve().parent.parent / "kernel_blocks.py"
    kb = blocks_file.read_text()
    st = init.stat()
    key = hashlib.sha256(repr((tuple(blocks), kb, _TAIL, str(init), st.st_size, st.st_mtime_ns,
                               sys.implementation.cache_tag)).encode()).hexdigest()[:20]
    target = cache_dir() / "torch-init" / key
    if not (target / "done").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            out = tmp / "__init__.py"
            out.write_text(init_source(init.read_text(), blocks, kb))
            py_compile.compile(str(out), cfile=str(out) + "c", dfile=str(init), doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
            (tmp / "done").write_text("")
            publish_for_sandbox(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    binds = [(str(target / "__init__.py"), str(init))]
    cache = init.parent / "__pycache__"
    for pyc in sorted(cache.glob("__init__.*.pyc")) if cache.is_dir() else ():
        binds.append((str(target / "__init__.py") + "c", str(pyc)))
    return tuple(binds)
