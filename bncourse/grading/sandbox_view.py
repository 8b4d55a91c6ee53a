"""What a grading kernel's view of the filesystem holds, hides and masks (``bncourse.grading.sandbox``
builds the bubblewrap command from it).

- ``python_roots()``: the folders of this Python environment, bound read-only;
- ``foreign_site_packages()``: package folders the environment does not use, hidden by an empty tmpfs;
- ``ffi_modules()``: the foreign-function-interface and subinterpreter extension modules, masked by
  ``/dev/null``; ``ffi_stand_in()``: the ``ctypes`` package kernels import instead;
- ``blocker_dir(library, reason)``: a package, bound over a library a notebook's rule leaves out,
  whose import raises ``ImportError``;
- ``publish_for_sandbox(tmp, target)``: how a build made for the view (the solution-free package,
  the library overlays, the stand-in) is published whole, readable by the kernel's user.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import sys
import sysconfig
from pathlib import Path

__all__ = ["ALWAYS_BLOCKED", "FFI_MODULES", "blocker_dir", "ffi_modules", "ffi_stand_in", "foreign_site_packages",
           "publish_for_sandbox", "python_roots", "site_packages"]


def python_roots() -> list[str]:
    """Folders that hold this Python environment (read-only in the sandbox)."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]:
        real = os.path.realpath(p)
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            roots.add(real)
    # The environment as it is named (a venv's own path may be a symlink) and as it resolves.
    for p in (sys.prefix,):
        roots.add(os.path.abspath(p))
    return sorted(r for r in roots if os.path.isdir(r) and r != "/" and not r.startswith("/usr"))


def site_packages() -> list[str]:
    """The site-packages folders this environment imports from."""
    return sorted({os.path.realpath(p) for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
                   if os.path.isdir(p)})


def foreign_site_packages() -> list[str]:
    """Package folders in the view that this environment does not use (the base interpreter's own
    site-packages under a venv, Debian's dist-packages): hidden by an empty tmpfs, so that a library
    blocked in the environment cannot be imported from there by putting them on sys.path."""
    import glob

    used = set(site_packages())
    found = set()
    for root in [*python_roots(), "/usr", "/usr/local"]:
        for pattern in ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages",
                        "lib64/python3*/site-packages"):
            found.update(os.path.realpath(p) for p in glob.glob(os.path.join(root, pattern)) if os.path.isdir(p))
    return sorted(found - used)



# Extension modules that call native code by address (foreign-function interfaces: ctypes' and
# cffi's), and CPython's own test hooks: masked by an empty file in every grading kernel's view.
FFI_MODULES = ("_ctypes", "_cffi_backend", "_testcapi", "_testinternalcapi",
               # subinterpreters: each has audit hooks of its own (none), so kernel_guard's would not apply there
               "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues")
ALWAYS_BLOCKED = ("cuda",)

@functools.lru_cache(maxsize=1)
def ffi_modules() -> tuple[str, ...]:
    """Files of the ``FFI_MODULES`` in the kernel's view (any Python of the environment, the system's
    Pythons in /usr): each is masked by ``/dev/null`` in the sandbox, so no import, by any name or loader,
    gives a kernel a foreign-function interface."""
    import glob

    hidden = [h + os.sep for h in foreign_site_packages()]
    found = set()
    for base in [*python_roots(), "/usr", "/usr/local"]:
        for folder in ("lib/python3*/lib-dynload", "lib/python3*/site-packages", "lib/python3*/dist-packages",
                       "lib/python3/dist-packages", "lib64/python3*/lib-dynload", "lib64/python3*/site-packages"):
            for name in FFI_MODULES:
                found.update(os.path.realpath(p) for p in glob.glob(os.path.join(base, folder, name + "*.so")))
    for sp in site_packages():
        for name in FFI_MODULES:
            found.update(os.path.realpath(p) for p in glob.glob(os.path.join(sp, name + "*.so")))
    return tuple(sorted(p for p in found if os.path.isfile(p) and not p.startswith(tuple(hidden))))


def ffi_stand_in() -> Path:
    """A folder holding the ``ctypes`` package grading kernels import (``bncourse.grading.ctypes_stand_in``),
    put first on their ``PYTHONPATH``: libraries that import ctypes still import, nothing calls native code."""
    import hashlib
    import tempfile as _tempfile

    from bncourse.grading.solution_free import cache_dir

    text = (Path(__file__).parent / "ctypes_stand_in.py").read_text()
    util = '"""ctypes.util in the grading sandbox: no library is found by name."""\n\n\ndef find_library(name):\n    return None\n'
    target = cache_dir() / "ffi-stand-in" / hashlib.sha256((text + util).encode()).hexdigest()[:16]
    if not (target / "ctypes" / "util.py").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(_tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        (tmp / "ctypes").mkdir()
        (tmp / "ctypes" / "__init__.py").write_text(text)
        (tmp / "ctypes" / "util.py").write_text(util)
        publish_for_sandbox(tmp, target)
    return target



def blocker_dir(library: str, reason: str) -> Path:
    """A folder holding a package ``library`` whose import raises ``ImportError`` with ``reason``."""
    import hashlib

    from bncourse.grading.solution_free import cache_dir

    key = hashlib.sha256(f"{library}|{reason}".encode()).hexdigest()[:12]
    target = cache_dir() / "blocked" / f"{library}-{key}"
    if not (target / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "__init__.py").write_text(f"raise ImportError({reason!r})\n")
        os.chmod(target, 0o755)
        os.chmod(target / "__init__.py", 0o644)
    return target



def publish_for_sandbox(tmp: Path, target: Path) -> None:
    """Make the folder ``tmp`` readable by the sandbox's unprivileged user and rename it to ``target``.

    A build made for the sandbox (the solution-free package, the library overlays) is written to a
    temporary folder beside ``target`` and published whole by one rename; when another process
    published it meanwhile, ``tmp`` is removed and theirs kept."""
    for dirpath, _, filenames in os.walk(tmp):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
