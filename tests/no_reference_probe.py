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

3. tries *every* module-level function of the build (private ones too, every module a kernel can
   import but the instructor's tooling ``SKIPPED_MODULES``) as the answer to each of its exercises:
   called on the first cases' inputs as they are and as torch tensors (a time limit each), its
   output is compared with what the full package's reference returned (``"answers"``: the
   functions that give the reference's output). ``"judged"`` lists the exercises whose reference
   output this comparison can read (arrays, numbers, tuples of them), and the full package's own
   reference must be found by it (``"self_found"``), so the comparison is shown to work.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import signal
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
        return bool({"NotAvailableWhileGrading", "unavailable"} & set(obj.__code__.co_names))
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


# The instructor's tooling: no exercise's answer, and called with arrays some of it would start
# processes or servers. Everything else a kernel can import is tried.
SKIPPED_MODULES = ("bncourse.grading", "bncourse.cli", "bncourse.__main__")
CASES_TRIED = 2       # the first cases of each check: enough to tell an answer from a coincidence
SECONDS_PER_CALL = 0.5


class _TimeUp(BaseException):
    """A candidate ran past its time limit (a BaseException: no ``except Exception`` in it swallows it)."""


def _numeric(x):
    """x as a float numpy array when it is an array, a tensor or a real number; else None."""
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
        return x.astype(np.float64)
    if isinstance(x, (float, int, np.floating, np.integer)) and not isinstance(x, bool):
        return np.asarray(float(x))
    return None


def _comparable(expected) -> list:
    """The informative numbers of a reference's output: arrays (not constant) and numbers, by position."""
    import numpy as np

    items = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    out = []
    for i, item in enumerate(items):
        a = _numeric(item)
        if a is None or not a.size or not np.isfinite(a).all():
            continue
        if (a.size == 1 and float(a.ravel()[0]) not in (0.0, 1.0)) or (a.size > 1 and float(a.std()) > 0):
            out.append((i, a))  # a number a wrong function is unlikely to hit, or an array that varies
    return out


def _matches(got, expected) -> bool:
    import numpy as np

    wanted = _comparable(expected)
    if not wanted:
        return False
    items = list(got) if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)) else [got]
    for i, a in wanted:
        b = _numeric(items[i]) if i < len(items) else None
        if b is not None and a.size == 1 and b.size == 1:  # a number, whether wrapped in an array or not
            a, b = a.ravel(), b.ravel()
        if b is None or b.shape != a.shape or not np.allclose(b, a, rtol=1e-5, atol=1e-8):
            return False
    return True


def _as_torch(args):
    import numpy as np
    import torch

    return tuple(torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in args)


def _limited(fn, args):
    def up(*_):
        raise _TimeUp()

    old = signal.signal(signal.SIGALRM, up)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CALL)
    try:
        return fn(*copy.deepcopy(args))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_TIMED_OUT: set = set()  # candidates that ran past the limit once: experiment runners, skipped from then on


def _answers(fn, stored) -> bool:
    """Does ``fn`` return the reference's output on every stored case (inputs as given or as tensors)?"""
    import torch

    if fn in _TIMED_OUT:
        return False
    for adapt in (lambda a: a, _as_torch):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return False
        ok = True
        for args, expected in stored:
            args = adapt(args)
            try:
                sig.bind(*args)
            except TypeError:
                ok = False
                break
            dtype, cwd = torch.get_default_dtype(), os.getcwd()
            try:
                got = _limited(fn, args)
            except _TimeUp:
                _TIMED_OUT.add(fn)
                return False
            except (Exception, SystemExit):  # noqa: BLE001 - not an answer
                ok = False
            finally:
                sys.setprofile(None)
                torch.set_default_dtype(dtype)
                os.chdir(cwd)
            if not ok or not _matches(got, expected):
                ok = False
                break
        if ok:
            return True
    return False


def _imported_modules(keep):
    """(name, module) of every module of the importable ``bncourse`` whose name ``keep`` accepts and
    that imports here (a module that does not import is not in reach either)."""
    import bncourse

    for info in pkgutil.walk_packages(bncourse.__path__, "bncourse."):
        if not keep(info.name):
            continue
        try:
            yield info.name, importlib.import_module(info.name)
        except BaseException:  # noqa: BLE001
            continue


def _candidates() -> dict[str, object]:
    """dotted name -> every module-level function of the importable ``bncourse`` (private ones too)."""
    found = {}
    for module_name, module in _imported_modules(lambda name: not name.startswith(SKIPPED_MODULES)):
        for name, obj in vars(module).items():
            if isinstance(obj, types.FunctionType) and obj.__module__ == module_name:
                found[f"{module_name}.{name}"] = obj
    return found


def _held(value, depth=0):
    """[(path, callable)] the course's code held in a module-level value: in lists, tuples, dicts,
    sets and a dataclass's fields (a table of ``Mistake`` entries), down a few levels."""
    import functools

    if depth > 3:
        return []
    if isinstance(value, functools.partial):
        value = value.func
    if isinstance(value, types.FunctionType):
        return [("", value)] if (value.__module__ or "").startswith("bncourse") else []
    if isinstance(value, dict):
        items = [(f"[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        items = [(f".{f}", getattr(value, f, None)) for f in value.__dataclass_fields__]
    else:
        return []
    return [(path + sub, fn) for path, v in items for sub, fn in _held(v, depth + 1)]


def tables() -> list[str]:
    """Working code held in module-level tables of the stubbed modules (the catalogue's mistakes)."""
    from bncourse.grading.solution_free import is_stubbed
    found = []
    for module_name, module in _imported_modules(is_stubbed):
        for name, value in vars(module).items():
            if not isinstance(value, (types.FunctionType, type, types.ModuleType)):
                found += [f"{module_name}.{name}{path}" for path, fn in _held(value) if not _is_stub(fn)]
    return sorted(found)


def batchnorm_modules() -> list[str]:
    """Every ``nn.Module`` class of the importable ``bncourse`` that is batch norm for some setting of
    its numeric keywords (each tried at its default, 0 and 1): ``BatchRenorm(C, r_max=1, d_max=0)``."""
    import itertools

    import torch

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float32) * 3 + 1
    want = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
    found = []
    for module_name, module in _imported_modules(lambda name: not name.startswith(SKIPPED_MODULES)):
        for name, cls in vars(module).items():
            if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == module_name):
                continue
            try:
                params = [p for p in list(inspect.signature(cls).parameters.values())[1:]
                          if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)][:5]
            except (TypeError, ValueError):
                continue
            for values in itertools.product(*[(p.default, 0, 1) for p in params]):
                try:
                    got = _limited(lambda: cls(3, **{p.name: v for p, v in zip(params, values)})(x.clone()), ())
                except _TimeUp:
                    break
                except BaseException:  # noqa: BLE001 - a stub, or not a (C)-constructed module
                    if not params:
                        break
                    continue
                if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(
                        got.float(), want, rtol=1e-4, atol=1e-4):
                    found.append(f"{module_name}.{name}")
                    break
    return sorted(found)


def _stored(refs) -> list:
    """[(args, expected)] of the first cases of the first reference whose output can be compared."""
    for name, ref, cases in refs:
        stored = []
        for case in cases[:CASES_TRIED]:
            try:
                args = tuple(case.make_args())
                expected = ref(*copy.deepcopy(args))
            except Exception:  # noqa: BLE001
                break
            if _comparable(expected):
                stored.append((args, expected))
        if stored:
            return [(name, ref, stored)]
    return []


def main(job: dict) -> dict:
    _use(job["full"])
    from bncourse.hints.texts import EXERCISES

    traced, stored, self_found = {}, {}, []
    for ex in EXERCISES.values():
        names: set[str] = set()
        refs = references(ex) if ex.id not in job.get("untraced", ()) else []
        for name, ref, cases in refs:
            names |= _traced(ref, cases) if name not in job.get("untraced", ()) else set()
        traced[ex.id] = sorted(names)
        for name, ref, cases in _stored(refs):
            stored[ex.id] = cases
            if _answers(ref, cases):
                self_found.append(ex.id)
    out: dict = {"traced": traced, "references": {}, "reached": {}, "answers": {}, "judged": sorted(stored),
                 "self_found": sorted(self_found), "tried": {}, "tables": {"full": tables()},
                 "batchnorm_modules": {"full": batchnorm_modules()}}
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
        out["tables"][build] = tables()
        out["batchnorm_modules"][build] = batchnorm_modules()
        candidates = _candidates() if any(eid in stored for eid in ids) else {}
        for eid in ids:
            if eid in stored:
                out["answers"][eid] = sorted(d for d, fn in candidates.items() if _answers(fn, stored[eid]))
                out["tried"][eid] = len(candidates)
    return out


if __name__ == "__main__":
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the candidates print goes to stderr; stdout holds the one JSON line
    result = main(json.load(open(sys.argv[1])))
    result["timed_out"] = sorted(f"{fn.__module__}.{fn.__qualname__}" for fn in _TIMED_OUT)
    answer.write(json.dumps(result) + "\n")
    answer.flush()
    # Candidates stopped by the time limit in the middle of their work can leave threads behind
    # (tqdm's monitor, a pool): interpreter finalization then aborted once ("PyThreadState_Get: the
    # function must be called with the GIL held", CI 2026-12-07). The answer is written: leave now.
    os._exit(0)
