"""The ``bncourse`` a grading kernel imports: the package with no solution in it.

A grading kernel must not reach a reference implementation of a graded exercise (nor a known
mistake, which is a near-solution). ``build(given)`` writes a copy of the installed ``bncourse``
in which every function and class of the ``STUBBED`` modules keeps its name and signature (so
imports and ``isinstance`` still work) but whose body raises ``NotAvailableWhileGrading``; the
sandbox (``bncourse.grading.sandbox``) mounts that copy read-only and puts it on the kernel's
``PYTHONPATH``, and mounts nothing else of the course. ``bncourse.__file__`` then leads to the
copy, never to the source notebooks.

``given``: names an assignment's own (instructor) cells import from a stubbed module, which that
notebook hands to its learners (notebook 3 gives the forward pass of notebook 2): those stay real.
``given_names(source notebook)`` reads them from the instructor's notebook, never the submission.

Builds are cached by content (``cache_dir()/<digest>``): one per package version and ``given``.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import bncourse
from bncourse.grading.sandbox import publish_for_sandbox

__all__ = ["STUBBED", "NotAvailableWhileGrading", "build", "cache_dir", "given_names", "is_stubbed", "stub_source"]

# Modules (a package: every module in it) whose functions and classes are stubbed in the grading
# build: the reference solutions, the course's own layers built from them, and the checks'
# judging code (known mistakes are near-solutions: they all live in the catalogue). Recording
# needs none of these (core, calls, replay, inputs, results, compare and the per-exercise modules'
# case tables stay). bncourse.diagnostics computes notebook 11's two exercises inside its hooks.
STUBBED: tuple[str, ...] = (
    "bncourse.reference",
    "bncourse.nn",
    "bncourse.nn_sync",
    "bncourse.folding",
    "bncourse.diagnostics",
    "bncourse.checks.diagnosis",
    "bncourse.checks.catalogue",
    # batch renormalization with r_max=1, d_max=0 is batch norm exactly (notebook 4's modules; on x.T,
    # layer norm): red team 2's N2. Notebook 9's renorm experiment is tagged skip-when-grading.
    "bncourse.renorm",
)
# Stubbed modules whose module-level data is itself near-solutions (the catalogue's tables of
# ``Mistake`` entries hold working numpy code: "percentiles not transposed" + ``.T`` answers notebook
# 5, red team 2's N7): only imports, stubbed functions and classes stay; every other top-level
# name is bound to None. (Any lambda of a stubbed module is stubbed too, wherever it sits.)
DATA_DROPPED: tuple[str, ...] = ("bncourse.checks.catalogue.",)
# The recording machinery: copied as it is.
RECORDING = frozenset({"bncourse.checks.core", "bncourse.checks.calls", "bncourse.checks.replay",
                       "bncourse.checks.replay_server", "bncourse.checks.inputs", "bncourse.checks.results",
                       "bncourse.checks.compare", "bncourse.checks.delegation"})
# Names in stubbed modules that are not solutions and that recording or the notebooks need.
KEPT: frozenset[str] = frozenset({
    "bncourse.folding.count_batchnorms",
    "bncourse.folding.compare_inference_time",
    "bncourse.checks.diagnosis.diagnose",  # imported by core; never called while recording
    "bncourse.checks.catalogue.lazy",  # every check hands it to check_function; only diagnosing calls what it returns
})
# Functions outside the STUBBED modules that compute a graded exercise's answer (the training loop's
# re-estimation of batch-norm statistics is notebook 6's exercise; an experiment's own copy of a
# measure or a fold is notebook 7's and 10's): stubbed by name, the rest of their module stays.
STUBBED_NAMES: frozenset[str] = frozenset({
    "bncourse.train.recompute_bn_statistics",
    "bncourse.experiments.step_measures.input_drift",
    "bncourse.experiments.overhead.fold_batchnorm",
    "bncourse.plots.percentile_bands",  # notebook 5's sigmoid_input_percentiles, under another name
    "bncourse.checks.folding._torch_fuse",  # notebook 10's check reference (torch's own fold)
    # notebook 11's saturated_fraction, kept real as a helper of the Diagnostics it hands out (red team 2,
    # found by tests/test_grading_no_reference.py trying every function): stubbed even there (Diagnostics
    # then cannot measure saturation in a grading kernel; nb 11 uses it only after its graded cells)
    "bncourse.diagnostics._saturated",
    "bncourse.diagnostics._dead",
})
# References the checks themselves need in the kernel to build a case's inputs: none (notebook 8's
# backward check builds its input cache in numpy from the whole batch, without the sync forward).
RECORDING_NEEDS: frozenset[str] = frozenset()
# In the other modules of bncourse.checks (needed to record: case tables, runners, check_*), the
# module-level functions that compute an exercise's expected answer are stubbed by name.
CHECK_REFERENCE = re.compile(r"_(?:\w+_)?reference(?:_\w+)?")
_VERSION = "10"  # bump when the transform changes


class NotAvailableWhileGrading(RuntimeError):
    """Raised by every stubbed function: the course's implementation is not in the grading kernel."""


def is_stubbed(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in STUBBED)


def _stub_body(qualname: str) -> list[ast.stmt]:
    message = (f"{qualname} is not available while grading: the grader's kernel holds no solution; "
               "your notebook must do this work itself")
    return ast.parse(f"raise __import__('bncourse.grading_stub', fromlist=['x']).NotAvailableWhileGrading({message!r})").body


class _Stubber(ast.NodeTransformer):
    def __init__(self, module: str, keep: set[str]):
        self.module, self.keep, self.prefix = module, keep, []

    def _qual(self, name: str) -> str:
        return ".".join([self.module, *self.prefix, name])

    def visit_FunctionDef(self, node):
        qual = self._qual(node.name)
        if qual in self.keep or (self.prefix and ".".join([self.module, self.prefix[0]]) in self.keep):
            return node
        node.body = _stub_body(qual)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        node.body = ast.parse(f"__import__('bncourse.grading_stub', fromlist=['x']).unavailable("
                              f"{self._qual('<lambda>')!r})", mode="eval").body
        return node

    def visit_ClassDef(self, node):
        qual = self._qual(node.name)
        if qual in self.keep:
            return node
        self.prefix.append(node.name)
        body = []
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body.append(self.visit(stmt))
            elif isinstance(stmt, ast.AnnAssign):
                body.append(ast.AnnAssign(target=stmt.target, annotation=stmt.annotation, value=None,
                                          simple=stmt.simple))  # a dataclass's fields stay, not their values
        self.prefix.pop()
        node.body = body or [ast.Pass()]
        return node


def _with_helpers(tree: ast.Module, module: str, given: set[str]) -> set[str]:
    """``given`` and the module-level functions and classes they use, transitively (a given
    function keeps working)."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    keep = {g for g in given if g.startswith(module + ".")}
    todo = [g.rsplit(".", 1)[1] for g in keep if g.rsplit(".", 1)[1] in defs]
    while todo:
        for node in ast.walk(defs[todo.pop()]):
            if isinstance(node, ast.Name) and node.id in defs and f"{module}.{node.id}" not in keep:
                keep.add(f"{module}.{node.id}")
                todo.append(node.id)
    return keep


def _called_at_import(tree: ast.Module) -> set[str]:
    """Names called by the module's own top-level statements (outside any function): factories."""
    called = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
    return called


def _makes_functions(node: ast.AST) -> bool:
    """A factory (it defines a function and hands it back, like ``_reference_then(transform)``): what
    the made function calls is stubbed where it lives, and a check calls the factory to build itself."""
    return any(isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
               for inner in ast.walk(node) if inner is not node)


def stub_check_references(source: str, module: str) -> str | None:
    """``source`` with its reference functions (``CHECK_REFERENCE``, or named in ``STUBBED_NAMES``)
    stubbed; None if it has none.

    A factory the module calls while importing (``_reference_then(...)`` building a mistake) stays:
    what it wraps is stubbed where it lives."""
    tree = ast.parse(source)
    factories = _called_at_import(tree)
    is_check = module.startswith("bncourse.checks.")
    targets = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and ((is_check and CHECK_REFERENCE.fullmatch(n.name) and not n.name.startswith("_switch_off")
                     and n.name not in factories and not _makes_functions(n)) or f"{module}.{n.name}" in STUBBED_NAMES)]
    if not targets:
        return None
    for node in targets:
        node.body = _stub_body(f"{module}.{node.name}")
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


def stub_source(source: str, module: str, keep: Iterable[str] = ()) -> str:
    """``source`` of ``module`` with every function's and method's body replaced by a raise, except
    the names in ``keep`` (and the helpers they use) and ``KEPT``."""
    tree = ast.parse(source)
    keep = _with_helpers(tree, module, set(keep)) - STUBBED_NAMES  # an answer stays stubbed, given or helper
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
        tree.body = tree.body[1:]  # the module's docstring may explain the solution
    tree = _Stubber(module, keep | KEPT).visit(tree)
    if module.startswith(DATA_DROPPED):
        tree.body = [_dropped(stmt) for stmt in tree.body]
    tree.body = [_guarded(stmt) for stmt in tree.body]
    ast.fix_missing_locations(tree)
    return f"# {module}: not available while grading (a solution-free build)\n" + ast.unparse(tree) + "\n"


def _dropped(stmt: ast.stmt) -> ast.stmt:
    """A top-level statement of a ``DATA_DROPPED`` module: kept if it defines or imports, else the
    names it binds are bound to None (a table of mistakes is not built)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return stmt
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
        stmt, (ast.AnnAssign, ast.AugAssign)) else []
    names = [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    if not names:
        return ast.Pass()
    return ast.Assign(targets=[ast.Name(name, ast.Store()) for name in names], value=ast.Constant(None))


def _guarded(stmt: ast.stmt) -> ast.stmt:
    """A top-level statement that calls something (a table of mistakes built by a stubbed factory)
    wrapped so that the module still imports: on an error its names are bound to None."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return stmt
    if not any(isinstance(node, ast.Call) for node in ast.walk(stmt)):
        return stmt
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
        stmt, (ast.AnnAssign, ast.AugAssign)) else []
    names = [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    fallback = [ast.Assign(targets=[ast.Name(name, ast.Store())], value=ast.Constant(None)) for name in names]
    return ast.Try(body=[stmt], handlers=[ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None,
                                                           body=fallback or [ast.Pass()])],
                   orelse=[], finalbody=[])


def given_names(instructor_sources: Iterable[str]) -> frozenset[str]:
    """Dotted names the instructor's (non-solution) cells import from stubbed modules.

    A name the same notebook grades, or a variant of it (a name that starts with it), is never given
    (notebook 2 imports the reference forward to show its error on a batch of one and
    ``update_running_stats_keras`` to compare conventions, and grades the learner's forward and
    update): an exercise is graded here when its check (``bncourse.hints.texts.EXERCISES``) is named
    in these cells."""
    from bncourse.grading.sources import as_python
    from bncourse.hints.texts import EXERCISES

    given, named = set(), set()
    for source in instructor_sources:
        try:
            tree = ast.parse(as_python(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                named.add(node.id)
            elif isinstance(node, ast.alias):
                named.add(node.name.rsplit(".", 1)[-1])
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if is_stubbed(node.module) or is_stubbed(f"{node.module}.{alias.name}"):
                        given.add(f"{node.module}.{alias.name}")
    graded_here = tuple(ex.function for ex in EXERCISES.values() if ex.check in named)
    return frozenset(g for g in given if not g.rsplit(".", 1)[1].startswith(graded_here))


def cache_dir() -> Path:
    base = os.environ.get("BNCOURSE_GRADING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "bncourse", "grading")
    return Path(base)


def _package_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def build(given: Iterable[str] = (), where: Path | None = None) -> Path:
    """A folder holding the solution-free ``bncourse`` (put it on ``PYTHONPATH``); built once per content."""
    root = Path(bncourse.__file__).resolve().parent
    files = _package_files(root)
    given = sorted(set(given) | RECORDING_NEEDS)
    h = hashlib.sha256(f"{_VERSION}|{','.join(STUBBED)}|{','.join(sorted(KEPT))}|{','.join(sorted(STUBBED_NAMES))}|"
                       f"{','.join(given)}".encode())
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    target = Path(where or cache_dir()) / h.hexdigest()[:20]
    if (target / "bncourse" / "__init__.py").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        for p in files:
            rel = p.relative_to(root)
            out = tmp / "bncourse" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            module = ".".join(("bncourse", *rel.with_suffix("").parts)).removesuffix(".__init__")
            if p.suffix == ".py" and is_stubbed(module):
                out.write_text(stub_source(p.read_text(), module, given))
            elif p.suffix == ".py" and module not in RECORDING and (
                    module.startswith("bncourse.checks.") or any(n.rsplit(".", 1)[0] == module for n in STUBBED_NAMES)):
                stubbed = stub_check_references(p.read_text(), module)
                out.write_text(stubbed) if stubbed is not None else shutil.copyfile(p, out)
            else:
                shutil.copyfile(p, out)
        (tmp / "bncourse" / "grading_stub.py").write_text(
            '"""What a stubbed function raises in the grading kernel."""\n\n\n'
            "class NotAvailableWhileGrading(RuntimeError):\n"
            '    """The course\'s implementation is not in the grading kernel."""\n\n\n'
            "def unavailable(what):\n"
            '    """What a stubbed lambda calls."""\n'
            "    raise NotAvailableWhileGrading(f\"{what} is not available while grading: the grader's kernel \"\n"
            '                                   "holds no solution; your notebook must do this work itself")\n')
        publish_for_sandbox(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
