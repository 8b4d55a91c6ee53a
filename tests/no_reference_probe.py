"""Run by tests/test_grading_no_reference.py in a subprocess: what a graded exercise's reference
reaches, in the full package and in each grading build.

    python no_reference_probe.py JOB.json   ->   prints one JSON line

JOB: {"full": path of the checkout, "builds": {build path: [exercise ids]}, "untraced": [exercise ids
or reference names whose runs are not traced]}. For every exercise of
the hints registry (``bncourse.hints.texts.EXERCISES``) the probe

1. in the full package: captures the reference(s) its check hands to ``check_function`` and traces
   which ``bncourse`` functions run while a reference computes the first case;
2. in the exercise's grading build (the one its notebook is graded with): calls each captured
   reference on the first case, and looks up every traced function and every function or class of
   the exercise's own name in the build.

It reports each reference's outcome (the exception's class name, or "REAL"), and, per traced or
same-named function, whether its code is the build's stub (it raises ``NotAvailableWhileGrading``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import pkgutil
import sys
import types

_PLUMBING = ("bncourse.checks.core", "bncourse.checks.calls", "bncourse.checks.compare", "bncourse.checks.inputs",
             "bncourse.checks.results", "bncourse.checks.replay", "bncourse.checks.delegation")


def _use(root: str) -> None:
    """Import ``bncourse`` from ``root`` from now on (drop every module of an earlier one)."""
    for name in [m for m in sys.modules if m == "bncourse" or m.startswith("bncourse.")]:
        del sys.modules[name]
    sys.path[:] = [root] + [p for p in sys.path if p != root and not p.endswith("/bncourse-probe-previous")]
    importlib.invalidate_caches()
    import bncourse

    assert bncourse.__file__.startswith(root), (bncourse.__file__, root)


def _check_modules():
    import bncourse.checks as checks

    return [importlib.import_module(f"bncourse.checks.{m.name}") for m in pkgutil.iter_modules(checks.__path__)
            if not m.ispkg]


def _dummies():
    """Learner stand-ins a check accepts past its set-up test: a function, an autograd Function, a module."""
    import torch

    return [lambda *a, **k: None, type("Fn", (torch.autograd.Function,), {}), type("Mod", (torch.nn.Module,), {})]


def references(exercise) -> list:
    """[(name, reference_fn, cases)] the check of ``exercise`` hands to ``check_function``."""
    mods = _check_modules()
    check = next(getattr(m, exercise.check) for m in mods if hasattr(m, exercise.check))
    required = [p for p in inspect.signature(check).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    from bncourse.checks.results import CheckResult

    captured: list = []

    def capture(name, learner_fn, reference_fn, cases, *args, **kwargs):
        captured.append((name, reference_fn, list(cases)))
        return CheckResult(name, [])

    saved = {m: m.check_function for m in mods if hasattr(m, "check_function")}
    try:
        for m in saved:
            m.check_function = capture
        for dummy in _dummies():
            try:
                check(*[dummy] * len(required))
            except Exception:  # noqa: BLE001 - a check that combines nothing from the stand-in
                pass
            if captured:
                break
    finally:
        for m, fn in saved.items():
            m.check_function = fn
    return [(n, r, c) for n, r, c in captured if callable(r) and c]


def _traced(ref, cases) -> set[str]:
    called: set[str] = set()

    def profile(frame, event, arg):
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith("bncourse.") and not module.startswith(_PLUMBING):
                called.add(f"{module}.{frame.f_code.co_qualname}")

    sys.setprofile(profile)
    try:
        ref(*cases[0].make_args())
    finally:
        sys.setprofile(None)
    return {q for q in called if "<" not in q and not q.endswith("__create_fn__")}


def _resolve(dotted: str):
    """The object ``dotted`` names (module path then attributes), or None when absent."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _is_stub(obj) -> bool:
    """Every piece of code ``obj`` holds (a function, or a class's methods) raises NotAvailableWhileGrading."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        return "NotAvailableWhileGrading" in obj.__code__.co_names
    if isinstance(obj, type):
        own = [v for k, v in vars(obj).items() if isinstance(v, (types.FunctionType, staticmethod, classmethod))
               and not (k.startswith("__") and k not in ("__init__", "__call__"))]
        return bool(own) and all(_is_stub(v) for v in own)
    return False


def _defined(names: set[str]) -> dict[str, list[str]]:
    """name -> dotted names of the module-level functions and classes so called anywhere in bncourse."""
    import ast

    import bncourse

    root = bncourse.__path__[0]
    found: dict[str, list[str]] = {n: [] for n in names}
    for info in pkgutil.walk_packages([root], "bncourse."):
        spec = importlib.util.find_spec(info.name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(open(spec.origin).read())
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in found:
                found[n.name].append(f"{info.name}.{n.name}")
    return found


def main(job: dict) -> dict:
    _use(job["full"])
    from bncourse.hints.texts import EXERCISES

    traced = {}
    for ex in EXERCISES.values():
        names: set[str] = set()
        for name, ref, cases in references(ex) if ex.id not in job.get("untraced", ()) else ():
            names |= _traced(ref, cases) if name not in job.get("untraced", ()) else set()
        traced[ex.id] = sorted(names)
    out: dict = {"traced": traced, "references": {}, "reached": {}}
    for build, ids in job["builds"].items():
        _use(build)
        from bncourse.hints.texts import EXERCISES

        defined = _defined({EXERCISES[eid].function for eid in ids})
        for eid in ids:
            ex = EXERCISES[eid]
            outcomes = []
            for name, ref, cases in references(ex):
                dotted = f"{getattr(ref, '__module__', '?')}.{getattr(ref, '__qualname__', '?')}"
                try:
                    ref(*cases[0].make_args())
                    outcomes.append([name, dotted, "REAL"])
                except Exception as err:  # noqa: BLE001
                    outcomes.append([name, dotted, type(err).__name__])
            out["references"][eid] = outcomes
            reached = {}
            for dotted in sorted(set(traced[eid]) | set(defined[ex.function])):
                obj = _resolve(dotted)
                reached[dotted] = "absent" if obj is None else "stub" if _is_stub(obj) else "real"
            out["reached"][eid] = reached
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.load(open(sys.argv[1])))))
