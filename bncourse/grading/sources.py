"""What a submission's code refers to, read from its source (the grader never trusts the kernel for it).

``Program(learner_sources, instructor_sources).references(name)`` lists what the learner's object
``name`` reaches, following the learner's own functions and classes it uses: dotted names of
everything imported (``bncourse.reference.normalize.standardize``, ``torch.nn.functional.batch_norm``),
whether by ``import``, ``from ... import``, a module attribute, ``importlib.import_module("...")``,
``__import__``, ``getattr(module, "...")``, a base class, or ``exec``/``eval`` of a constant string
(read as code). What cannot be read (``exec`` of a computed string, ``getattr`` of a module with a
computed name, ``globals()``) becomes ``<dynamic:...>``. ``bncourse.checks.delegation.Rule.judge``
decides from this list whether an exercise was handed to the course's implementation.

Learner code: solution cells and any cell that is not a locked instructor cell. Names the learner
binds take precedence over names the instructor's cells bind. The code a ``%%time``/``%%capture``
cell or a ``%time`` line runs is read as code (IPython hands it to the magic as a string); a
learner cell not even IPython can read is kept in ``Program.unparsable`` (it ran nothing).
"""

from __future__ import annotations

import ast
import builtins
from typing import Iterable

__all__ = ["FRAME_ATTRIBUTES", "RUN_TIME_ROUTES", "Program", "as_python", "defined_names",
           "learner_and_instructor_sources", "run_time_route"]

_DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "setattr", "delattr"}
# Libraries that hold no implementation of any exercise and no way to the course's: a computed name
# in one (``getattr(np, name)(X, axis=0)``, red team 2's false refusal F1) is read as
# ``numpy.<computed>``, not as code the grader cannot read.
PLAIN_LIBRARIES = frozenset({"numpy", "math", "cmath", "statistics", "operator", "random", "itertools",
                             "functools", "collections", "string"})


# The interpreter's registries and frames hand out any loaded module or object without naming it
# (red team 6: os.sys.modules[...], from sys import modules, gc.get_objects()).
RUN_TIME_ROUTES = ("sys.modules", "sys._getframe", "sys._current_frames", "gc.get_objects", "gc.get_referrers",
                   "gc.get_referents", "inspect.currentframe", "inspect.stack", "inspect.trace",
                   "inspect.getouterframes",
                   "__main__")  # the notebook's own namespace as a module (red team 7: __main__.batchnorm_forward)
# Methods that put more into the object they are called on (a registry of functions filled at module level).
_MUTATING_METHODS = frozenset({"update", "append", "extend", "insert", "setdefault", "add", "appendleft",
                               "__setitem__"})
# Modules whose attributes are names any code can call by their plain name.
_NAMESPACE_MODULES = frozenset({"__main__", "builtins"})
# Attributes that hand out a namespace or a frame (red team 7: f.__globals__[name], a traceback's
# tb_frame.f_globals): no exercise needs them, and the reading cannot follow what is taken from them.
FRAME_ATTRIBUTES = frozenset({"__globals__", "__builtins__", "f_globals", "f_locals", "f_builtins", "f_back",
                              "tb_frame", "tb_next", "gi_frame", "cr_frame", "ag_frame", "__closure__",
                              "cell_contents"})


def run_time_route(reference: str) -> str:
    """The ``RUN_TIME_ROUTES`` entry a dotted reference goes through, at any depth ('' if none):
    ``os.sys.modules.get`` -> ``sys.modules``."""
    parts = reference.split(".")
    for i in range(len(parts)):
        tail = ".".join(parts[i:])
        for route in RUN_TIME_ROUTES:
            if tail == route or tail.startswith(route + "."):
                return route
    return ""


def as_python(source: str) -> str:
    """A cell's source as IPython runs it: ``%magic`` and ``!shell`` lines become plain calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - no IPython, or a cell IPython cannot read: the text as it is
        return source


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(as_python(source))
    except SyntaxError:
        return None


def defined_names(source: str) -> set[str]:
    """Names a cell binds at its top level (raises ``SyntaxError`` if even IPython cannot read it)."""
    tree = ast.parse(as_python(source))
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        else:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return names


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Scope:
    """Module-level bindings of one side (learner or instructor)."""

    def __init__(self):
        self.aliases: dict[str, set[str]] = {}   # name -> dotted names it was imported as
        self.defs: dict[str, list[ast.AST]] = {}  # name -> nodes that bind it (def, class, assigned value)
        self.stars: list[str] = []
        self.dynamic: list[str] = []             # module-level constructs that may bind names unseen

    def add_module(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            self._statement(stmt)

    def _statement(self, stmt) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for local, dotted in _imports(stmt):
                if local == "*":
                    self.stars.append(dotted)
                else:
                    self.aliases.setdefault(local, set()).add(dotted)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.defs.setdefault(stmt.name, []).append(stmt)
            for node in ast.walk(stmt):  # `global g` in a function: what it assigns to g binds the module's g
                if isinstance(node, ast.Global):
                    for name in node.names:
                        self.defs.setdefault(name, []).append(stmt)
        else:
            for target in ast.walk(stmt):  # every binding: assignments, loop and with targets, :=, match captures
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                    self.defs.setdefault(target.id, []).append(stmt)
                elif isinstance(target, (ast.MatchAs, ast.MatchStar)) and target.name:
                    self.defs.setdefault(target.name, []).append(stmt)
                elif isinstance(target, (ast.Attribute, ast.Subscript)) and isinstance(target.ctx, ast.Store):
                    self._mutated(target, stmt)
            call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
            if call is not None and isinstance(call.func, ast.Attribute) and call.func.attr in _MUTATING_METHODS:
                self._mutated(call.func.value, stmt)  # registry.update(name=f), items.append(f): more in the object
            if call is not None and isinstance(call.func, ast.Name) and call.func.id == "setattr" and call.args:
                self._set_attribute(call, stmt)
            for inner in _child_statements(stmt):  # the bodies of if, for, while, with, try, match
                self._statement(inner)
        for node in ast.walk(stmt):  # exec of a constant string at module level is read as code
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                    and node.func.attr in ("run_cell_magic", "run_line_magic")):
                body = _const_str(node.args[-1])  # %%time / %%capture / %time: the code they run
                inner = _parse(body) if body is not None else None
                if inner is not None:
                    self.add_module(inner)
                continue
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_CALLS:
                text = _const_str(node.args[0]) if node.args else None
                inner = _parse(text) if text is not None and node.func.id in ("exec", "eval", "compile") else None
                if inner is not None:
                    self.add_module(inner)
                elif node.func.id == "locals" and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue  # a function's locals() reads what its own code bound; it binds nothing
                elif node.func.id not in ("setattr", "delattr"):
                    self.dynamic.append(node.func.id)

    def _mutated(self, target, stmt) -> None:
        """``X.attr = v``, ``X[k] = v``, ``X.update(...)`` at module level put more into X, an object of the
        learner's own (not an imported module): X is bound by ``stmt`` too (red team 7: a dict of given
        functions filled by ``_GIVEN.update(...)``). ``__main__.name = v`` and ``builtins.name = v`` bind
        ``name`` (the name the test cell calls, not the function the reading would read)."""
        base = target
        while isinstance(base, (ast.Attribute, ast.Subscript)):
            base = base.value
        if not isinstance(base, ast.Name):
            return
        imported = self.aliases.get(base.id, set())
        if isinstance(target, ast.Attribute) and imported & _NAMESPACE_MODULES and base is target.value:
            self.defs.setdefault(target.attr, []).append(stmt)
        elif not imported:
            self.defs.setdefault(base.id, []).append(stmt)

    def _set_attribute(self, call: ast.Call, stmt) -> None:
        """``setattr(__main__, "name", v)`` binds name; with a computed name, any name: code it cannot read."""
        owner = call.args[0]
        if isinstance(owner, ast.Name) and self.aliases.get(owner.id, set()) & _NAMESPACE_MODULES:
            name = _const_str(call.args[1]) if len(call.args) > 1 else None
            if name is not None:
                self.defs.setdefault(name, []).append(stmt)
            else:
                self.dynamic.append("setattr")


def _child_statements(stmt) -> list:
    """The statements in the bodies of a compound statement (not of a def or class: their own scope)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    inner = [s for field in ("body", "orelse", "finalbody") for s in (getattr(stmt, field, None) or [])]
    inner += [s for handler in (getattr(stmt, "handlers", None) or []) for s in handler.body]
    inner += [s for case in (getattr(stmt, "cases", None) or []) for s in case.body]
    return inner


def _imports(stmt) -> list[tuple[str, str]]:
    if isinstance(stmt, ast.Import):
        return [((a.asname or a.name.split(".")[0]), (a.name if a.asname else a.name.split(".")[0]))
                for a in stmt.names]
    if stmt.level:  # relative imports cannot reach the installed package
        return []
    return [("*" if a.name == "*" else (a.asname or a.name), stmt.module if a.name == "*" else f"{stmt.module}.{a.name}")
            for a in stmt.names]


class Program:
    """The learner's and the instructor's cells of one notebook, read once."""

    def __init__(self, learner_sources: Iterable[str], instructor_sources: Iterable[str] = ()):
        self.learner, self.instructor = _Scope(), _Scope()
        self.unparsable: list[str] = []  # learner cells not even IPython can read (they ran nothing), for the report
        for scope, sources in ((self.learner, learner_sources), (self.instructor, instructor_sources)):
            for source in sources:
                tree = _parse(source)
                if tree is not None:
                    scope.add_module(tree)
                elif scope is self.learner:
                    self.unparsable.append(source)

    def references(self, names: Iterable[str]) -> set[str]:
        """Everything the objects ``names`` (as the learner's code binds them) reach; a route through the
        interpreter's own registries or frames (``RUN_TIME_ROUTES``), by whatever module it is spelled
        (``os.sys.modules``, ``from sys import modules``), is also ``<dynamic:...>``."""
        walker = _Walker(self)
        for name in names:
            walker.refs.update(walker.global_name(name))
        routes = {route for route in map(run_time_route, walker.refs) if route}
        return walker.refs | {f"<dynamic:{route}>" for route in routes}

    def forwards_reached(self, name: str) -> list[str]:
        """The forward functions ``name`` reaches, directly or through helpers: the learner's own, the
        instructor's cells' or an imported one (a name with ``forward`` in it). A backward that evaluates
        a forward may be finite differences of it (red team 5's F1), which no check can tell by value."""
        walker = _Walker(self)
        walker.refs.update(walker.global_name(name))
        reached = (walker.refs | walker.bound) - {name}
        return sorted(r for r in reached if "forward" in r.rsplit(".", 1)[-1].lower())


class _Walker(ast.NodeVisitor):
    def __init__(self, program: Program):
        self.p = program
        self.refs: set[str] = set()
        self.seen: set[int] = set()
        self.locals: list[dict[str, list[str]]] = [{}]  # per function: local name -> dotted names (imports)
        self.bound: set[str] = set()  # module-level names of the notebook's own code that were followed

    # -- names ------------------------------------------------------------------------------

    def global_name(self, name: str) -> list[str]:
        """Follow a module-level name: walk learner definitions; return the dotted names it may stand for."""
        for scope in (self.p.learner, self.p.instructor):
            if name in scope.defs or name in scope.aliases:
                if name in scope.defs:
                    self.bound.add(name)
                found = set(scope.aliases.get(name, ()))
                outer, self.locals = self.locals, [{}]  # module-level code sees no function's locals
                try:
                    for node in scope.defs.get(name, []):
                        self.walk(node)
                        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                            found.update(self.dotted(node.value))
                finally:
                    self.locals = outer
                return sorted(found)
            if scope.stars and not hasattr(builtins, name):
                return [f"{m}.{name}" for m in scope.stars]
            if scope is self.p.learner and scope.dynamic and not hasattr(builtins, name):
                self.refs.add(f"<dynamic:{scope.dynamic[0]}>")
                return []
        return []

    def is_local(self, name: str) -> bool:
        return any(name in scope for scope in self.locals[1:])

    def resolve(self, name: str) -> list[str]:
        for scope in reversed(self.locals[1:]):
            if name in scope:
                return scope[name]
        return self.global_name(name)

    def dotted(self, expr) -> list[str]:
        """The dotted names an expression may stand for (a module, or something in one), else []."""
        if isinstance(expr, ast.Name):
            return self.resolve(expr.id)
        if isinstance(expr, ast.Attribute):
            return [f"{d}.{expr.attr}" for d in self.dotted(expr.value)]
        if isinstance(expr, ast.Call) and expr.args:
            arg = _const_str(expr.args[0])
            func = self.dotted(expr.func) if not isinstance(expr.func, ast.Name) or expr.func.id != "__import__" \
                else ["__import__"]
            if arg is not None and any(f in ("__import__", "importlib.import_module") for f in func):
                return [arg]
            attr = _const_str(expr.args[1]) if len(expr.args) > 1 else None
            if isinstance(expr.func, ast.Name) and expr.func.id == "getattr" and attr is not None:
                return [f"{d}.{attr}" for d in self.dotted(expr.args[0])]
        return []

    def visit_Assign(self, node):
        if len(self.locals) > 1:
            found = self.dotted(node.value)
            for target in node.targets:
                if isinstance(target, ast.Name) and found:
                    self.locals[-1][target.id] = found
        self.generic_visit(node)

    def walk(self, node) -> None:
        if id(node) not in self.seen:
            self.seen.add(id(node))
            self.visit(node)

    # -- visitors ---------------------------------------------------------------------------

    def _function(self, node):
        args = {a.arg: [] for a in ast.walk(node.args) if isinstance(a, ast.arg)} if hasattr(node, "args") else {}
        stores = {n.id: [] for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        self.locals.append({**stores, **args})
        self.generic_visit(node)
        self.locals.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node):
        for local, dotted in _imports(node):
            self.refs.add(dotted)
            if len(self.locals) > 1 and local != "*":
                self.locals[-1][local] = [dotted]

    visit_ImportFrom = visit_Import

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            in_function = len(self.locals) > 1  # a function's locals() holds only names its own code bound
            if node.id in ("globals", "locals", "vars") and not self.is_local(node.id) and not (
                    node.id == "locals" and in_function):
                self.refs.add(f"<dynamic:{node.id}>")
            self.refs.update(self.resolve(node.id))

    def visit_Attribute(self, node):
        if node.attr in FRAME_ATTRIBUTES:
            self.refs.add(f"<dynamic:{node.attr}>")
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        for dotted in self.dotted(base):
            full = ".".join([dotted] + chain[::-1])
            self.refs.add(full)
            if full.startswith("sys.modules"):
                self.refs.add("<dynamic:sys.modules>")
        if not isinstance(base, ast.Name):
            self.visit(base)

    def visit_Call(self, node):
        func = node.func
        name = func.id if isinstance(func, ast.Name) and not self.is_local(func.id) else ""
        if name == "vars" and not node.args and not node.keywords and len(self.locals) > 1:
            return  # vars() in a function is its locals(): names its own code bound (F2: cache = dict(vars()))
        arg = _const_str(node.args[0]) if node.args else None
        if name in ("exec", "eval", "compile"):
            inner = _parse(arg) if arg is not None else None
            if inner is None:
                self.refs.add(f"<dynamic:{name}>")
            else:
                self.walk(inner)
        elif name == "__import__":
            self.refs.add(arg if arg is not None else "<dynamic:__import__>")
        elif name == "getattr" and len(node.args) >= 2 and isinstance(node.args[0], ast.Name):
            attr = _const_str(node.args[1])
            for dotted in self.resolve(node.args[0].id):
                plain = attr is None and dotted.split(".")[0] in PLAIN_LIBRARIES
                self.refs.add(f"{dotted}.{attr}" if attr is not None else f"{dotted}.<computed>" if plain
                              else "<dynamic:getattr>")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if any(d.startswith("importlib") for d in self.resolve(func.value.id)):
                self.refs.add(arg if arg is not None else "<dynamic:importlib>")
        self.generic_visit(node)


def learner_and_instructor_sources(nb) -> tuple[list[str], list[str]]:
    """(learner code, instructor code) of an nbgrader notebook: locked non-solution cells are the instructor's."""
    learner, instructor = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        locked_instructor = meta.get("locked") and not meta.get("solution")
        (instructor if locked_instructor else learner).append(cell.source)
    return learner, instructor
