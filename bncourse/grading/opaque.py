"""Opaque code, for the instructor: a cell whose code is hidden from reading (``opaque_code(source)``).

Copying is out of any sandbox's reach (learners have the full package), and the similarity report
reads source text. A pasted reference can hide from it as data: the module compiled, marshalled,
compressed and base64-encoded, then run with ``types.FunctionType`` (red team 2, 2026-12-07: 8/8 on
notebook 2 with nothing in any report). ``opaque_code`` lists, for one cell or file, what of that
kind it holds, so the instructor reads the cell; it never adds or removes a point (issue 20: reading
source is a report). Found:

- code objects made or run by hand: ``marshal``, ``types.FunctionType``/``CodeType`` (by name or
  as ``type(f)``/``type(f.__code__)``), ``__code__``/``__globals__`` and other code internals,
  ``pickle``/``dill``/``cloudpickle`` loads, ``ctypes``;
- decoding: ``zlib``/``lzma``/``bz2``/``gzip`` decompression, ``base64``/``binascii``/``codecs``
  decoding, ``bytes.fromhex``;
- ``exec``/``eval``/``compile``/``__import__``/``importlib.import_module`` of something that is not
  a literal (code or a module name computed at run time);
- encoded text: base64- or hex-looking string literals of ``BLOB_CHARS`` characters or more in all;
- native code: ``ctypes`` (imported, or its ``CDLL``/``cdll``/``PyDLL``/``pythonapi``/``CFUNCTYPE``
  names, a tensor's ``_cdata`` address), libtorch's private bindings ``torch._C.*`` (named), and
  TorchScript's Static Runtime and graph passes (``_jit_to_static_module``, ``StaticModule``,
  ``_freeze_module``, ``_jit_pass_*``). Red team 2 (N1, N3) ran libtorch's own exported batch-norm
  kernels and its C++ folding pass through ctypes: no sandbox rule can remove a symbol from a loaded
  libtorch, so these are reported, never prevented (``docs/instructors.md`` section 1b).

A cell neither Python nor IPython can read is searched as text for the same names.
"""

from __future__ import annotations

import ast
import re

__all__ = ["BLOB_CHARS", "opaque_code"]

BLOB_CHARS = 800
_MODULES = {"marshal": "marshal", "pickle": "pickle", "dill": "dill", "cloudpickle": "cloudpickle",
            "ctypes": "ctypes", "zlib": "zlib", "lzma": "lzma", "bz2": "bz2", "gzip": "gzip", "base64": "base64",
            "binascii": "binascii", "codecs": "codecs", "zipimport": "zipimport"}
_NAMES = {"FunctionType", "CodeType", "LambdaType", "loads", "decompress", "b64decode", "b32decode", "b16decode",
          "a85decode", "b85decode", "urlsafe_b64decode", "decodebytes", "a2b_base64", "unhexlify", "fromhex"}
_DUNDERS = {"__code__", "__globals__", "__closure__", "__builtins__", "co_code", "co_consts", "f_globals",
            "f_locals", "func_code"}
# native code: ctypes' ways to a symbol, a tensor's C++ address, TorchScript's runtime and graph passes
_NATIVE = {"CDLL", "cdll", "PyDLL", "pydll", "pythonapi", "CFUNCTYPE", "PYFUNCTYPE", "dlopen", "_cdata",
           "_jit_to_static_module", "StaticModule", "_freeze_module", "_jit_pass_fold_convbn",
           "FoldFrozenConvBatchnorm", "FoldFrozenLinearBatchnorm"}
_RUNNERS = {"exec", "eval", "compile", "__import__", "import_module"}
_ENCODED = re.compile(r"[A-Za-z0-9+/=_\-\s]+")


def _name_of(node) -> str:
    """``a.b.c`` for an attribute chain of names, the name for a Name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_literal(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))


def _encoded_chars(tree: ast.AST) -> int:
    total = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if len(text) >= 16 and _ENCODED.fullmatch(text) and " " not in text.strip():
                total += len(text)
    return total


def _found_in_tree(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {f"import {a.name}" for a in node.names if a.name.split(".")[0] in _MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _MODULES:
                found.add(f"from {node.module} import ...")
            found |= {f"{node.module}.{a.name}" for a in node.names if a.name in _NAMES}
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "torch._C" or node.module.startswith("torch._C.")):
            found |= {f"torch._C.{a.name} (libtorch's private bindings)" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "_C" for a in node.names):
            found.add("torch._C (libtorch's private bindings)")
        elif isinstance(node, ast.Import) and any(a.name.startswith("torch._C") for a in node.names):
            found.add("torch._C (libtorch's private bindings)")
        if isinstance(node, ast.Attribute):
            chain = _name_of(node)
            if chain.startswith("torch._C.") and chain.count(".") == 2:
                found.add(f"{chain} (libtorch's private bindings)")
            if node.attr in _NATIVE or node.attr.startswith(("_jit_pass_", "_ZN")):
                found.add(f".{node.attr} (native code)")
        elif isinstance(node, ast.Name) and (node.id in _NATIVE or node.id.startswith("_jit_pass_")):
            found.add(f"{node.id} (native code)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value in _NATIVE or node.value.startswith("_jit_pass_") or "libtorch" in node.value
                or "at::native" in node.value or "_ZN" in node.value):
            found.add(f"the name {node.value[:60]!r} as a string (native code)")
        if isinstance(node, ast.Attribute):
            if node.attr in _DUNDERS:
                found.add(f".{node.attr}")
            elif node.attr in _NAMES and _name_of(node.value).split(".")[0] in (*_MODULES, "types", "bytes"):
                found.add(_name_of(node))
        elif isinstance(node, ast.Name) and node.id in _NAMES - {"loads", "decompress"}:
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value in _MODULES or node.value in _NAMES or node.value in _DUNDERS or node.value in _RUNNERS):
            found.add(f"the name {node.value!r} as a string")
        if isinstance(node, ast.Call):
            called = _name_of(node.func).rsplit(".", 1)[-1]
            if called in _RUNNERS and node.args and not _is_literal(node.args[0]):
                found.add(f"{called} of computed code or name")
            if called == "type" and len(node.args) == 1:  # type(f) / type(f.__code__): FunctionType, CodeType
                arg = node.args[0]
                if isinstance(arg, ast.Lambda) or (isinstance(arg, ast.Attribute) and arg.attr in _DUNDERS):
                    found.add("type() of a function or code object")
    chars = _encoded_chars(tree)
    if chars >= BLOB_CHARS:
        found.add(f"{chars} characters of encoded text")
    return found


def opaque_code(source: str) -> list[str]:
    """What in ``source`` (a cell or a .py file) hides code from reading, sorted ([]: nothing)."""
    from bncourse.grading.similarity import code_view  # a %%magic cell's body, read as the code it is
    from bncourse.grading.sources import as_python

    for text in (source, code_view(source), as_python(source)):
        try:
            return sorted(_found_in_tree(ast.parse(text)))
        except (SyntaxError, ValueError):
            continue
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
    found = {f"{w} (in a cell not readable as Python)" for w in words & (set(_MODULES) | _NAMES | _DUNDERS | _NATIVE)}
    if "torch._C" in source:
        found.add("torch._C (in a cell not readable as Python)")
    longest = max((len(m) for m in re.findall(r"[A-Za-z0-9+/=]{64,}", source)), default=0)
    if longest >= BLOB_CHARS:
        found.add(f"{longest} characters of encoded text (in a cell not readable as Python)")
    return sorted(found)
