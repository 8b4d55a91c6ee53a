"""The ``ctypes`` a grading kernel imports: no foreign-function interface, only ``dlopen`` of the environment's libraries.

Never imported by the grader: ``bncourse.grading.sandbox_view.ffi_stand_in()`` copies this file as
``ctypes/__init__.py`` into a folder put first on the sandboxed kernel's ``PYTHONPATH``. In the
sandbox the real FFI modules (``_ctypes``, ``_cffi_backend``) are masked by an empty file, so the
standard library's ``ctypes`` cannot be imported at all, however it is reached; this stand-in only
lets the libraries that import ``ctypes`` for a side matter (torch loading its global
dependencies, ``torch.ops.load_library`` for torchvision's operators, threadpoolctl, matplotlib,
ipykernel) import and run:

- ``CDLL(path, mode)`` really loads a shared library, without any FFI, by asking the import
  machinery to load it as an extension module (``dlopen`` with ``mode``); the library has no
  Python module in it, so the import fails after the library is loaded, and its static
  initializers (torch operators' registrations) have run. Only libraries inside the read-only
  Python environment or the system's library folders are loaded (a learner's file is refused; it
  could not be mapped anyway: the kernel's writable folders are ``noexec``).
- every function, type and pointer is inert: reading a symbol raises ``AttributeError``, calling
  anything raises ``OSError``. Nothing here calls native code.
"""

import os as _os
import sys as _sys

__all__ = ["CDLL", "PyDLL", "CFUNCTYPE", "PYFUNCTYPE", "POINTER", "sizeof", "cdll", "pydll", "pythonapi"]

NOT_AVAILABLE = "ctypes is not available in the grading sandbox (no foreign-function interface)"
RTLD_GLOBAL = _os.RTLD_GLOBAL
RTLD_LOCAL = _os.RTLD_LOCAL
DEFAULT_MODE = RTLD_LOCAL
_ENVIRONMENT = tuple(sorted({_os.path.realpath(p) + _os.sep for p in (
    _sys.prefix, _sys.base_prefix, _sys.exec_prefix, "/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64")}))

_MULTIARCH = __import__("sysconfig").get_config_var("MULTIARCH") or ""
_SYSTEM_LIBRARIES = [d for d in (f"/lib/{_MULTIARCH}", f"/usr/lib/{_MULTIARCH}", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
                                 "/usr/local/lib") if _os.path.isdir(d)]


class ArgumentError(Exception):
    pass


class _InertType(type):
    """Arrays of a stand-in type (``c_void_p * 3``) cannot be made."""

    def __mul__(cls, length):
        raise OSError(NOT_AVAILABLE)

    __rmul__ = __mul__


class _Inert(metaclass=_InertType):
    """A type or pointer of the stand-in: it can be made, never used."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise OSError(NOT_AVAILABLE)

    def __getattr__(self, attr):
        raise AttributeError(f"{attr}: {NOT_AVAILABLE}")


def _dlopen(name, mode):
    """Load the shared library ``name`` (a path in the environment, or a bare name the loader finds)."""
    if name is None:  # the process itself: already loaded
        return
    name = _os.fspath(name)
    if _os.sep not in name:  # a bare name: in the system's library folders (the loader's own search)
        found = [_os.path.join(d, name) for d in _SYSTEM_LIBRARIES if _os.path.isfile(_os.path.join(d, name))]
        if not found:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        name = found[0]
    real = _os.path.realpath(name)
    if not real.startswith(_ENVIRONMENT) or not _os.path.isfile(real):
        raise OSError(f"{name}: only the Python environment's own libraries can be loaded while grading; "
                      + NOT_AVAILABLE)
    name = real
    from importlib.machinery import ExtensionFileLoader, ModuleSpec

    marker = "_bncourse_dlopen_only"  # no library defines PyInit_ of it: loaded, then refused as a module
    flags = _sys.getdlopenflags()
    _sys.setdlopenflags(mode | _os.RTLD_NOW)
    try:
        ExtensionFileLoader(marker, name).create_module(ModuleSpec(marker, None, origin=name))
    except ImportError as exc:
        if "PyInit_" + marker not in str(exc):
            raise OSError(f"{name}: {exc}") from None
    finally:
        _sys.setdlopenflags(flags)


class _Function:
    """A library's symbol: its ``argtypes``/``restype`` can be set, calling it raises ``OSError``."""

    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise OSError(f"{self.__name__}: {NOT_AVAILABLE}")


class CDLL:
    def __init__(self, name, mode=DEFAULT_MODE, handle=None, use_errno=False, use_last_error=False, winmode=None):
        self._name = name
        _dlopen(name, mode)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = _Function(name)
        setattr(self, name, func)
        return func

    __getitem__ = __getattr__


class PyDLL(CDLL):
    pass


class LibraryLoader:
    def __init__(self, dlltype):
        self._dlltype = dlltype

    def LoadLibrary(self, name):
        return self._dlltype(name)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._dlltype(name)

    __getitem__ = __getattr__


cdll = LibraryLoader(CDLL)
pydll = LibraryLoader(PyDLL)


pythonapi = PyDLL(None)


def CFUNCTYPE(*args, **kwargs):
    return _Inert


PYFUNCTYPE = CFUNCTYPE


def POINTER(_type):
    return _Inert


def sizeof(_type):
    return 8


def pointer(*_args):
    return _Inert()


byref = pointer


def cast(_obj, typ):
    return typ() if isinstance(typ, type) else _Inert()


def addressof(*_args):
    raise OSError(NOT_AVAILABLE)


memmove = memset = string_at = wstring_at = addressof


def __getattr__(name):
    """``c_void_p``, ``Structure`` and the like: inert classes (code that declares them still imports)."""
    if name.startswith("__"):
        raise AttributeError(name)
    cls = type(name, (_Inert,), {})
    globals()[name] = cls
    return cls
