"""Checks for the notebook "Batch norm in PyTorch": the learner's autograd.Function and modules.

- ``check_batchnorm_function(Fn)``: the learner's ``torch.autograd.Function`` with
  ``Fn.apply(x, gamma, beta, eps)`` for x (N, D). The check runs ``torch.autograd.gradcheck`` in
  float64 itself, compares the forward with ``F.batch_norm`` (training mode) and the gradients
  with autograd through ``nn.BatchNorm1d``.
- ``check_batchnorm1d_module(cls)``: the learner's module over that function, against
  ``nn.BatchNorm1d``: several training steps (outputs, gradients, running statistics), then eval.
- ``check_batchnorm2d(cls, device=None)``: the learner's ``BatchNorm2d`` in torch operations,
  against ``nn.BatchNorm2d``: buffers registered, training steps, eval outputs, eval leaving the
  buffers alone, gradients; in float64 on the CPU and in float32 on the current device.

Every check returns a ``CheckResult`` (HTML in JupyterLab, ``assert_passed()`` for nbgrader);
``hidden=True`` runs other seeds, shapes, ``eps`` and ``momentum``. Failures are diagnosed by
name (forgot to register the buffers, running statistics not updated, updated in eval mode,
biased variance in running_var, momentum flipped, statistics over the wrong dimensions, batch
statistics used in eval mode, cache not kept on ctx, wrong number of gradients, ...). A module
diagnosis is found as in ``core``: a known buggy implementation, run through the same steps,
reproduces what the learner's module did where it went wrong.

The learner's code may not call torch's own batch norm (``F.batch_norm``, ``nn.BatchNorm*``)
while it is checked: the exercise is to write it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.checks import replay
from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, check_function, combine, compare_arrays, safe_call
from bncourse.reference.batchnorm import batchnorm_backward, batchnorm_forward

__all__ = [
    "check_batchnorm_function",
    "check_batchnorm1d_module",
    "check_batchnorm2d",
    "ModuleMistake",
    "Step",
    "check_module",
]

# ---------------------------------------------------------------------------------------------
# Shared pieces: refusing torch's own batch norm, explaining errors, silence
# ---------------------------------------------------------------------------------------------

BUILTIN_MESSAGE = "called torch's own batch norm (F.batch_norm or nn.BatchNorm*) while being checked"

# Captured at import: the check itself needs the real ones for its references.
_REAL_BUILTINS = [(F, "batch_norm", F.batch_norm), (torch, "batch_norm", torch.batch_norm)]


class UsedBuiltinBatchNorm(RuntimeError):
    """Raised inside the learner's code when it reaches torch's own batch norm during a check."""


@contextlib.contextmanager
def _no_builtin_batchnorm():
    """Make F.batch_norm and torch.batch_norm raise while the learner's code runs."""

    def refuse(*args, **kwargs):
        raise UsedBuiltinBatchNorm(BUILTIN_MESSAGE)

    for module, name, _ in _REAL_BUILTINS:
        setattr(module, name, refuse)
    try:
        yield
    finally:
        for module, name, real in _REAL_BUILTINS:
            setattr(module, name, real)


@contextlib.contextmanager
def _quiet():
    """No warning from torch or the learner reaches stderr while a check runs."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


# (pattern in the error text, diagnosis). The first match wins.
_ERROR_EXPLANATIONS: list[tuple[str, str]] = [
    ("NotImplementedError", "not attempted yet: the code still raises NotImplementedError"),
    (re.escape(BUILTIN_MESSAGE),
     "used torch's own batch norm: this exercise asks for your own (the numpy functions, or torch "
     "operations such as mean, var, sqrt); nn.BatchNorm* and F.batch_norm are the reference it is checked against"),
    ("Backward' object has no attribute",
     "forgot to keep the cache for backward: in forward store it on ctx (ctx.cache = cache); "
     "ctx.save_for_backward only accepts tensors, and the numpy cache is not one"),
    ("save_for_backward can only save",
     "ctx.save_for_backward only accepts tensors: keep the numpy cache as an attribute instead, ctx.cache = cache"),
    ("returned an incorrect number of gradients",
     "wrong number of gradients from backward: return one per input of forward, (dx, dgamma, dbeta, None), "
     "with None for eps (a float has no gradient)"),
    ("returned a gradient different than None at position",
     "backward returns the gradients in the order of forward's inputs (x, gamma, beta, eps): "
     "(dx, dgamma, dbeta, None), the None for eps last"),
    ("expected Variable or None",
     "backward returned numpy arrays: convert each gradient back to a tensor with torch.from_numpy(...), "
     "in dout's dtype and on its device"),
    ("forward returned a numpy",
     "forward returned a numpy array: convert it back, torch.from_numpy(out).to(device=x.device, dtype=x.dtype)"),
    ("Can't call numpy() on Tensor that requires grad",
     "detach before converting to numpy: x.detach().cpu().numpy()"),
    ("can't convert (cuda|mps|xpu)",
     "tensors on a GPU must come to the CPU before numpy: x.detach().cpu().numpy()"),
    (r"forward\(\) takes|forward\(\) missing",
     "forward has the wrong signature: it should be forward(ctx, x, gamma, beta, eps), called as Fn.apply(x, gamma, beta, eps)"),
    (r"non-singleton dimension 3",
     "the (C,) statistics or parameters were broadcast against the last dimension (W) instead of the channels: "
     "reshape them to (1, C, 1, 1), e.g. mean[None, :, None, None] or mean.view(1, -1, 1, 1)"),
    (r"__init__\(\) got an unexpected keyword argument|__init__\(\) takes",
     "the constructor should be __init__(self, num_features, eps=1e-5, momentum=0.1), like nn.BatchNorm2d's"),
    ("has no attribute 'running_mean'|has no attribute 'running_var'",
     "name the running statistics running_mean and running_var (as nn.BatchNorm2d does) and register them as buffers"),
    ("has no attribute 'weight'|has no attribute 'bias'",
     "name gamma and beta weight and bias (as nn.BatchNorm2d does), as nn.Parameter"),
    ("Expected more than 1 value per channel",
     "a training batch needs more than one value per channel"),
]


def _explain(text: str) -> str:
    for pattern, explanation in _ERROR_EXPLANATIONS:
        if re.search(pattern, text):
            return explanation
    return ""


def _np(t) -> np.ndarray | None:
    """A tensor as a numpy array in its own dtype (None stays None)."""
    if t is None:
        return None
    return t.detach().cpu().numpy().copy()


def _replaying(obj) -> bool:
    """True in the grader's replay, where the learner's object is a stand-in answered from receipts."""
    return type(obj) is replay.Replayer


def _on_behalf_of(runner: Callable, learner_obj) -> Callable:
    """Give a wrapper that runs the learner's object the learner's module name, for its receipts."""
    try:
        runner.__module__ = str(getattr(learner_obj, "__module__", "") or "")
    except Exception:  # noqa: BLE001 - a learner object may raise on attribute access
        runner.__module__ = ""
    return runner


# ---------------------------------------------------------------------------------------------
# (a) The learner's autograd.Function
# ---------------------------------------------------------------------------------------------

FUNCTION_OUTPUTS = ("out", "dx", "dgamma", "dbeta")


def _fn_case(seed: int, n: int, d: int, eps: float = 1e-5, dtype=np.float64, offset: float = 3.0):
    """x (N, D) with per-feature scales (one small, where eps matters) and offsets; gamma, beta, dout."""

    def make():
        rng = np.random.default_rng(seed)
        scales = rng.uniform(0.5, 3.0, size=d)
        scales[0] = 0.05
        x = rng.normal(size=(n, d)) * scales + rng.uniform(-offset, offset, size=d)
        gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1, 1], size=d)
        beta = rng.normal(size=d)
        dout = rng.normal(size=(n, d))
        return tuple(a.astype(dtype) for a in (x, gamma, beta, dout)) + (eps,)

    return make


def _function_runner(Fn) -> Callable:
    """(x, gamma, beta, dout, eps) numpy -> (out, dx, dgamma, dbeta) numpy, through ``Fn.apply``."""

    def run(x, gamma, beta, dout, eps):
        xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        with _no_builtin_batchnorm(), _quiet():
            out = Fn.apply(xt, gt, bt, eps)
            if isinstance(out, np.ndarray):
                raise TypeError("forward returned a numpy array, expected a tensor")
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, expected a tensor")
            if tuple(out.shape) != tuple(x.shape):
                raise ValueError(f"forward returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
            if out.grad_fn is None:
                raise RuntimeError("the output has no grad_fn: return a new tensor from forward, not one detached later")
            out.backward(torch.tensor(dout, dtype=out.dtype, device=out.device))
        return _np(out), _np(xt.grad), _np(gt.grad), _np(bt.grad)

    return run


def _function_reference(x, gamma, beta, dout, eps):
    """The oracle: the output of F.batch_norm in training mode, the gradients of autograd through nn.BatchNorm1d."""
    xt = torch.tensor(x, requires_grad=True)
    with _quiet():
        out = F.batch_norm(xt.detach(), None, None, weight=torch.tensor(gamma), bias=torch.tensor(beta),
                           training=True, eps=eps)
        bn = nn.BatchNorm1d(x.shape[1], eps=eps, dtype=xt.dtype)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(gamma))
            bn.bias.copy_(torch.tensor(beta))
        bn(xt).backward(torch.tensor(dout))
    return _np(out), _np(xt.grad), _np(bn.weight.grad), _np(bn.bias.grad)


def _numpy_function(forward=batchnorm_forward, backward=batchnorm_backward, pass_eps=True, order=(0, 1, 2)):
    """Build an autograd.Function over numpy forward/backward (used for the reference and mistakes)."""

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            args = [a.detach().cpu().double().numpy() for a in (x, gamma, beta)]
            out, cache = forward(*args, eps) if pass_eps else forward(*args)
            ctx.cache = cache
            return torch.from_numpy(out).to(x)

        @staticmethod
        def backward(ctx, dout):
            grads = backward(dout.detach().cpu().double().numpy(), ctx.cache)
            grads = [torch.from_numpy(np.ascontiguousarray(grads[i])).to(dout) for i in order]
            return grads[0], grads[1], grads[2], None

    return _Fn


def _backward_constant_stats(dout, cache):
    """dx as if the batch mean and variance did not depend on x."""
    _, dgamma, dbeta = batchnorm_backward(dout, cache)
    return dout * cache.gamma * cache.inv_std, dgamma, dbeta


def _backward_identity(dout, cache):
    _, dgamma, dbeta = batchnorm_backward(dout, cache)
    return dout.copy(), dgamma, dbeta


def _function_mistakes() -> list[Mistake]:
    as_fn = lambda F_: _function_runner(F_)  # noqa: E731
    return [
        Mistake("eps not passed on",
                "call your forward with the eps that apply() received, batchnorm_forward(x, gamma, beta, eps)",
                as_fn(_numpy_function(pass_eps=False))),
        Mistake("dgamma and dbeta swapped",
                "backward returns the gradients in the order of forward's inputs: (dx, dgamma, dbeta, None)",
                as_fn(_numpy_function(order=(0, 2, 1)))),
        Mistake("backward treats the batch mean and variance as constants",
                "x reaches the output also through the mean and the variance; use the full batchnorm_backward",
                as_fn(_numpy_function(backward=_backward_constant_stats))),
        Mistake("backward passes dout through as dx",
                "dx comes from batchnorm_backward(dout, cache), not dout itself",
                as_fn(_numpy_function(backward=_backward_identity))),
    ]


def _function_cases(hidden: bool) -> tuple[list[Case], list[Case]]:
    """(float64 cases, float32 cases)."""
    if hidden:
        return (
            [Case("N=5, D=2", _fn_case(11, 5, 2)),
             Case("N=3, D=6, eps=0.01", _fn_case(12, 3, 6, eps=1e-2)),
             Case("N=32, D=4", _fn_case(13, 32, 4, offset=10.0))],
            [Case("N=7, D=5 (float32 in, float32 out)", _fn_case(14, 7, 5, dtype=np.float32))],
        )
    return (
        [Case("N=8, D=3", _fn_case(0, 8, 3)),
         Case("N=2, D=4 (smallest batch)", _fn_case(1, 2, 4)),
         Case("N=16, D=5, eps=0.1", _fn_case(2, 16, 5, eps=0.1))],
        [Case("N=10, D=3 (float32 in, float32 out)", _fn_case(3, 10, 3, dtype=np.float32))],
    )


def _gradcheck_runner(Fn) -> Callable:
    """(x, gamma, beta, eps) -> array([1.0]) when torch.autograd.gradcheck passes ``Fn.apply`` in float64."""

    def run(x, gamma, beta, eps):
        inputs = tuple(torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)) + (eps,)
        with _no_builtin_batchnorm(), _quiet():
            ok = torch.autograd.gradcheck(Fn.apply, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
        return np.array([1.0 if ok is True else 0.0])

    return run


def _gradcheck_case(hidden: bool) -> Case:
    n, d, seed = (5, 3, 21) if hidden else (4, 3, 20)

    def make():
        x, gamma, beta, _, eps = _fn_case(seed, n, d)()
        return x, gamma, beta, eps

    return Case(f"torch.autograd.gradcheck (float64, N={n}, D={d})", make)


def _gradcheck_result(Fn, hidden: bool) -> CheckResult:
    """The gradcheck row: passed, or what gradcheck (or the function) said."""
    result = check_function("BatchNormFunction (gradcheck)", Fn, lambda *args: np.array([1.0]),
                            [_gradcheck_case(hidden)], outputs=("passed",), rtol=0, atol=0, check_dtype=False)
    for case in result.cases:
        if not case.passed and ("GradcheckError" in case.detail or "Jacobian mismatch" in case.detail):
            first = case.detail.split("raised ", 1)[-1].splitlines()[0]
            case.detail = "the gradients of backward differ from finite differences: " + first[:300]
    return result


def _apply_explanation(result: CheckResult, named: Sequence[str] = ()) -> CheckResult:
    """Replace a bare 'the function raised ...' diagnosis with the named mistake behind the error."""
    if result.passed or any(result.diagnosis.startswith(n) for n in named):
        return result
    for case in result.cases:
        if not case.passed:
            explanation = _explain(case.detail)
            if explanation:
                result.diagnosis = explanation
                return result
    return result


def check_batchnorm_function(Fn, hidden: bool = False) -> CheckResult:
    """Does ``Fn.apply(x, gamma, beta, eps)`` match F.batch_norm, with autograd's gradients, and pass gradcheck?

    Fn: the learner's ``torch.autograd.Function`` subclass (the class itself, not an instance).
    """
    exercise = "BatchNormFunction"
    replaying = _replaying(Fn)
    if not replaying and not (isinstance(Fn, type) and issubclass(Fn, torch.autograd.Function)):
        return CheckResult(
            exercise,
            [CaseResult("setup", False, f"expected a torch.autograd.Function subclass, got {type(Fn).__name__}")],
            diagnosis="pass the class itself, e.g. check_batchnorm_function(BatchNormFunction)",
        )
    cases64, cases32 = _function_cases(hidden)
    mistakes = _function_mistakes()
    # check_function runs the learner's Function through these wrappers (and records receipts while
    # grading); in the grader's replay, Fn is a stand-in and the receipts answer instead.
    runner = Fn if replaying else _on_behalf_of(_function_runner(Fn), Fn)
    grad_runner = Fn if replaying else _on_behalf_of(_gradcheck_runner(Fn), Fn)
    with _quiet():
        r64 = check_function(exercise, runner, _function_reference, cases64, mistakes,
                             outputs=FUNCTION_OUTPUTS, rtol=1e-6, atol=1e-8)
        r32 = check_function(exercise, runner, _function_reference, cases32, mistakes,
                             outputs=FUNCTION_OUTPUTS, rtol=1e-3, atol=1e-4, check_dtype=True)
        rgrad = _gradcheck_result(grad_runner, hidden)
    grad = rgrad.cases[0]
    result = combine(exercise, r64, r32, CheckResult(exercise, [grad]))
    if not grad.passed and r64.passed and r32.passed:
        result.diagnosis = "backward does not compute the gradient of forward (torch.autograd.gradcheck failed)"
    result.tolerance = "float64: rtol=1e-06, atol=1e-08; float32: rtol=1e-03, atol=1e-04; gradcheck: eps=1e-6, atol=1e-5"
    dtype_problem = next((c.detail for c in result.cases if not c.passed and "has dtype" in c.detail), "")
    if dtype_problem and r64.passed:  # the values may be right: say what is wrong, not a mistake they resemble
        result.diagnosis = (f"wrong dtype ({dtype_problem.split(';')[0]}): convert back in the input's dtype, "
                            "torch.from_numpy(out).to(device=x.device, dtype=x.dtype), and the gradients in dout's")
    return _apply_explanation(result, [m.name for m in mistakes])


# ---------------------------------------------------------------------------------------------
# (b), (c) Modules: a stateful protocol run on the learner's module and on torch's
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One protocol: build ``cls(C, **kwargs)``, run ``steps`` training batches of ``shape``, then eval.

    Attributes:
        name: shown to the learner, e.g. "N=4, C=3, H=5, W=5".
        shape: (N, D) or (N, C, H, W); dim 1 is the number of features / channels.
        seed: seeds the data, gamma, beta and dout.
        steps: training batches before switching to eval.
        kwargs: constructor arguments beyond num_features (eps, momentum).
    """

    name: str
    shape: tuple
    seed: int
    steps: int = 3
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleMistake:
    """A known wrong module; ``only`` restricts which recorded values it must reproduce (substrings of keys)."""

    name: str
    hint: str
    cls: type
    only: tuple = ()


class _ProtocolError(Exception):
    pass


def _batch(gen: torch.Generator, shape: tuple, dtype, device) -> torch.Tensor:
    """Per-channel scales (channel 0 small, where eps matters) and offsets."""
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scales = torch.rand(c, generator=gen, dtype=torch.float64) * 2.5 + 0.5
    scales[0] = 0.05
    offsets = (torch.rand(c, generator=gen, dtype=torch.float64) - 0.5) * 6
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scales.view(view) + offsets.view(view)
    return x.to(device=device, dtype=dtype)


def _record(cls, spec: Step, dtype, device, forbid: bool) -> tuple[dict, str, object]:
    """Run ``spec`` on a fresh ``cls``: the recorded values (numpy), the error text ('' if none), the module."""
    rec: dict[str, np.ndarray | None] = {}
    module = None
    gen = torch.Generator().manual_seed(spec.seed)
    c = spec.shape[1]
    guard = _no_builtin_batchnorm() if forbid else contextlib.nullcontext()

    def body():
        nonlocal module
        module = cls(c, **spec.kwargs)
        if not isinstance(module, nn.Module):
            raise _ProtocolError(f"the class made a {type(module).__name__}, expected an nn.Module")
        module.to(device=device, dtype=dtype)
        for pname in ("weight", "bias"):
            p = getattr(module, pname)
            if not isinstance(p, torch.Tensor) or tuple(p.shape) != (c,):
                raise _ProtocolError(f"expected {pname} to be a tensor of shape ({c},), got {type(p).__name__}"
                                     + (f" of shape {tuple(p.shape)}" if isinstance(p, torch.Tensor) else ""))
        buffers, params, state = dict(module.named_buffers()), dict(module.named_parameters()), module.state_dict()
        rec["registered"] = np.array([b in buffers and b in state for b in ("running_mean", "running_var")]
                                     + [p in params for p in ("weight", "bias")])
        rec["initial running_mean"] = _np(module.running_mean)
        rec["initial running_var"] = _np(module.running_var)
        with torch.no_grad():
            module.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
            module.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        module.train()
        for k in range(1, spec.steps + 1):
            x = _batch(gen, spec.shape, dtype, device).requires_grad_(k == 1)
            out = module(x)
            if not isinstance(out, torch.Tensor):
                raise _ProtocolError(f"forward returned {type(out).__name__}, expected a tensor")
            rec[f"step {k}: output"] = _np(out)
            if k == 1:
                dout = torch.randn(spec.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
                if out.grad_fn is None:
                    raise _ProtocolError("the output has no gradient: nothing connects it to x, weight and bias")
                out.backward(dout)
                rec["step 1: dx"] = _np(x.grad)
                rec["step 1: dweight"] = _np(module.weight.grad)
                rec["step 1: dbias"] = _np(module.bias.grad)
                rec["buffers track gradients"] = np.array(
                    [bool(getattr(module, b).requires_grad) for b in ("running_mean", "running_var")])
            rec[f"step {k}: running_mean"] = _np(module.running_mean)
            rec[f"step {k}: running_var"] = _np(module.running_var)
        module.eval()
        x = _batch(gen, spec.shape, dtype, device)
        with torch.no_grad():
            out = module(x)
        if not isinstance(out, torch.Tensor):
            raise _ProtocolError(f"forward returned {type(out).__name__} in eval mode, expected a tensor")
        rec["eval: output"] = _np(out)
        rec["eval: running_mean afterwards"] = _np(module.running_mean)
        rec["eval: running_var afterwards"] = _np(module.running_var)

    with guard, _quiet():
        call = safe_call(body, ())
    return rec, call.error, module


# Which recorded values make up each row of the result table.
_GROUPS = [
    ("training: outputs of {steps} steps", lambda k: k.startswith("step") and k.endswith("output")),
    ("training: gradients dx, dweight, dbias", lambda k: k.startswith("step 1: d")),
    ("training: running_mean and running_var after each step",
     lambda k: k.startswith("step") and "running" in k or k.startswith("initial")),
    ("eval: output (from the running statistics)", lambda k: k == "eval: output"),
    ("eval: running statistics left unchanged", lambda k: k.startswith("eval: running")),
]


class LearnerModuleError(RuntimeError):
    """The learner's module raised during the protocol (the message is its error)."""


def _spec_args(spec: Step) -> Callable[[], tuple]:
    """A spec as plain arguments (receipts fingerprint ints, floats, None and arrays)."""
    return lambda: (spec.seed, np.array(spec.shape, dtype=np.int64), spec.steps,
                    spec.kwargs.get("eps"), spec.kwargs.get("momentum"))


def _spec_from_args(seed, shape, steps, eps, momentum) -> Step:
    kwargs = {k: v for k, v in (("eps", eps), ("momentum", momentum)) if v is not None}
    return Step("", tuple(int(n) for n in shape), int(seed), int(steps), kwargs)


_DTYPE_FLAGS = "outputs in the input's dtype"


def _protocol_runner(cls, dtype, device, keys: Sequence[str], store: dict | None = None, forbid: bool = True):
    """(seed, shape, steps, eps, momentum) -> the recorded values for ``keys``, as a tuple of arrays.

    Runs ``_record``; keeps (rec, err, module) in ``store[seed]``; raises ``LearnerModuleError``
    when the module raised. ``_DTYPE_FLAGS`` in keys: whether each output kept ``dtype``.
    """

    def run(seed, shape, steps, eps, momentum):
        rec, err, module = _record(cls, _spec_from_args(seed, shape, steps, eps, momentum), dtype, device, forbid)
        if store is not None:
            store[int(seed)] = (rec, err, module)
        if err:
            raise LearnerModuleError(err)
        rec = dict(rec)
        outs = [k for k in rec if k.endswith("output")]
        rec[_DTYPE_FLAGS] = np.array([rec[k] is not None and rec[k].dtype == np.dtype(str(dtype).split(".")[-1])
                                      for k in outs])
        return tuple(rec.get(k) for k in keys)

    return run


def _same(a, b, rtol, atol, check_dtype=False, name="value") -> str:
    if a is None and b is None:
        return ""
    return compare_arrays(name, a, b, rtol, atol, check_dtype)


def _registration(cls, c: int) -> tuple[CaseResult, str]:
    """Are running_mean / running_var registered buffers and weight / bias parameters? (row, diagnosis)"""
    name = "running_mean and running_var registered as buffers (in state_dict); weight and bias parameters"

    def build():
        with _no_builtin_batchnorm(), _quiet():
            return cls(c)

    call = safe_call(build, ())
    if call.error:
        return CaseResult(name, False, f"raised {call.error}"), _explain(call.error) or f"the constructor raised {call.error}"
    m = call.value
    if not isinstance(m, nn.Module):
        return CaseResult(name, False, f"made a {type(m).__name__}"), "the class must subclass nn.Module (and call super().__init__())"
    buffers, params, state = dict(m.named_buffers()), dict(m.named_parameters()), m.state_dict()
    for b in ("running_mean", "running_var"):
        if b in params:
            return (CaseResult(name, False, f"{b} is an nn.Parameter"),
                    f"{b} is an nn.Parameter, so the optimizer would train it: register it as a buffer, "
                    f"self.register_buffer('{b}', ...)")
        if b not in buffers or b not in state:
            what = "missing" if not hasattr(m, b) else f"a plain attribute ({type(getattr(m, b)).__name__}), not a buffer"
            return (CaseResult(name, False, f"{b} is {what}; state_dict keys: {sorted(state)}"),
                    f"forgot to register buffers: create them with self.register_buffer('{b}', "
                    f"torch.{'zeros' if b == 'running_mean' else 'ones'}(num_features)), so that state_dict saves "
                    f"them and .to(device) moves them")
    for p in ("weight", "bias"):
        if p not in params:
            return (CaseResult(name, False, f"{p} is not an nn.Parameter"),
                    f"make {p} an nn.Parameter (gamma is weight, beta is bias) so the optimizer trains it")
    return CaseResult(name, True), ""


def check_module(
    exercise: str,
    cls,
    reference_cls,
    specs: Sequence[Step],
    mistakes: Sequence[ModuleMistake] = (),
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    device_spec: Step | None = None,
    device=None,
    rtol32: float = 1e-3,
    atol32: float = 1e-4,
) -> CheckResult:
    """Run the learner's module class and ``reference_cls`` through the same training and eval steps.

    The specs run in float64 on the CPU (tight tolerance, mistakes diagnosed there); ``device_spec``
    runs once more in float32 on ``device`` against the reference on that device.
    """
    replaying = _replaying(cls)
    if not replaying and not isinstance(cls, type):
        return CheckResult(exercise, [CaseResult("setup", False, f"expected a class, got {type(cls).__name__}")],
                           diagnosis="pass the class itself (no parentheses), e.g. check(BatchNorm2d)")
    if not replaying and issubclass(cls, nn.modules.batchnorm._BatchNorm):
        return CheckResult(exercise, [CaseResult("setup", False, "the class subclasses torch's own batch norm")],
                           diagnosis=_explain(BUILTIN_MESSAGE))
    cpu = torch.device("cpu")
    reference = [_record(reference_cls, s, torch.float64, cpu, forbid=False)[:2] for s in specs]
    for (_, err), s in zip(reference, specs):  # pragma: no cover - the reference must run
        if err:
            raise RuntimeError(f"reference failed on {s.name}: {err}")

    # The learner's module runs through check_function, one call per protocol: while grading it
    # records receipts, and in the grader's replay (cls is then a stand-in) the receipts answer and
    # the verdict is these comparisons alone. The rows below are built from the same runs.
    store: dict = {}
    receipted = []
    for spec, (ref, _) in zip(specs, reference):
        keys = list(ref)
        runner = cls if replaying else _on_behalf_of(_protocol_runner(cls, torch.float64, cpu, keys, store), cls)
        receipted.append(check_function(
            exercise, runner, _protocol_runner(reference_cls, torch.float64, cpu, keys, forbid=False),
            [Case(spec.name, _spec_args(spec))], outputs=keys, rtol=rtol, atol=atol, check_dtype=False))
    dev = None
    if device_spec is not None:
        dev = torch.device(device) if device is not None else _default_device()
        ref32 = _record(reference_cls, device_spec, torch.float32, dev, forbid=False)[0]
        keys32 = [k for k in ref32 if k != "buffers track gradients"] + [_DTYPE_FLAGS]
        runner = cls if replaying else _on_behalf_of(_protocol_runner(cls, torch.float32, dev, keys32, store), cls)
        receipted.append(check_function(
            exercise, runner, _protocol_runner(reference_cls, torch.float32, dev, keys32, forbid=False),
            [Case(f"float32 on {dev}, {device_spec.name}", _spec_args(device_spec))], outputs=keys32,
            rtol=rtol32, atol=atol32, check_dtype=False))
    if replaying:
        return combine(exercise, *receipted)

    reg_row, reg_diag = _registration(cls, specs[0].shape[1])
    learner = [store.get(s.seed, ({}, "the module was not run", None)) for s in specs]

    rows = [reg_row]
    failed_keys: list[set] = [set() for _ in specs]
    errors = [err for _, err, _ in learner if err]
    for title, belongs in _GROUPS:
        title = title.format(steps=max(s.steps for s in specs))
        detail = ""
        for i, (spec, (rec, err, _), (ref, _)) in enumerate(zip(specs, learner, reference)):
            for key in (k for k in ref if belongs(k)):
                before = f"step {spec.steps}: {key.split(' ')[1]}" if key.startswith("eval: running") else None
                if key not in rec or (before and before not in rec):
                    msg = f"{key}: not reached, the module raised {err}" if err else f"{key}: not recorded"
                elif before:  # eval must leave the buffers as training left them
                    msg = _same(rec[key], rec[before], 0, 0, name=key)
                    msg = msg and f"{key.split(' ')[1]} changed in eval mode ({msg.split(': ', 1)[-1]})"
                else:
                    msg = _same(rec[key], ref[key], rtol, atol, name=key)
                if msg:
                    if not before:
                        failed_keys[i].add(key)
                    detail = detail or f"{spec.name}: {msg}"
        rows.append(CaseResult(title, not detail, detail))

    tracked = [s.name for s, (rec, _, _) in zip(specs, learner)
               if rec.get("buffers track gradients") is not None and rec["buffers track gradients"].any()]
    missing = [s.name for s, (rec, _, _) in zip(specs, learner) if "buffers track gradients" not in rec]
    detail = (f"{tracked[0]}: running_mean or running_var requires grad after a step" if tracked else
              f"{missing[0]}: not reached, the module raised {errors[0] if errors else 'an error'}" if missing else "")
    rows.append(CaseResult("running statistics updated outside autograd (no gradient history)", not detail, detail))

    notes: list[str] = []
    device_diagnosis = ""
    if device_spec is not None:
        rec, err, _ = store.get(device_spec.seed, ({}, "the module was not run", None))
        ref = ref32
        detail = f"raised {err}" if err else ""
        if not detail:
            for key in ref:
                if key == "buffers track gradients":
                    continue
                if key not in rec:
                    detail = f"{key}: not recorded"
                    break
                msg = _same(rec[key], ref[key], rtol32, atol32, check_dtype=key.endswith("output"), name=key)
                if msg:
                    detail = msg
                    break
        rows.append(CaseResult(f"float32 on {dev}, {device_spec.name}: training and eval", not detail, detail))
        if detail and not errors and not any(failed_keys):
            device_diagnosis = (
                f"float64 on the CPU matches, float32 on {dev} does not: keep every tensor in x's dtype and on "
                "x's device. Write new running statistics into the buffers in place (self.running_mean.copy_(new)) "
                "rather than replacing them with a tensor of another dtype, and create new tensors with "
                "dtype=x.dtype, device=x.device")
    module = next((m for _, _, m in learner if m is not None), None)
    if module is not None and not any(b == "num_batches_tracked" for b, _ in module.named_buffers()):
        notes.append(f"optional: nn.{reference_cls.__name__} also keeps a num_batches_tracked buffer (a counter of training "
                     "steps); without it, loading its state_dict needs strict=False")

    result = CheckResult(exercise, rows, tolerance=f"float64: rtol={rtol:g}, atol={atol:g}; float32: rtol={rtol32:g}, "
                         f"atol={atol32:g}", notes=notes)
    if not result.passed:
        result.diagnosis = (_diagnose_module(reg_diag, errors, learner, specs, failed_keys, mistakes, rtol, atol)
                            or device_diagnosis or "the values differ from torch's (see the rows below)")
    return result


def _diagnose_module(reg_diag, errors, learner, specs, failed_keys, mistakes, rtol, atol) -> str:
    if errors:
        return _explain(errors[0]) or f"the module raised {errors[0]}"
    if reg_diag:
        return reg_diag
    if any(rec.get("buffers track gradients") is not None and rec["buffers track gradients"].any()
           for rec, _, _ in learner):
        return ("the running statistics track gradients: update them without autograd, inside "
                "`with torch.no_grad():` (or from mean.detach()), else every step extends the graph")
    updated_in_eval = any(
        f"step {s.steps}: running_mean" in rec and "eval: running_mean afterwards" in rec
        and (_same(rec["eval: running_mean afterwards"], rec[f"step {s.steps}: running_mean"], 0, 0)
             or _same(rec["eval: running_var afterwards"], rec[f"step {s.steps}: running_var"], 0, 0))
        for (rec, _, _), s in zip(learner, specs)
    )
    if updated_in_eval:
        if _reproduces(_BATCH_STATS_IN_EVAL, learner, specs, [{"eval: output"} for _ in specs], rtol, atol):
            return ("ignores self.training: in eval mode (self.training is False) normalize with running_mean and "
                    "running_var and leave them unchanged; batch statistics and updates are for training only")
        return ("running statistics updated in eval mode: update running_mean and running_var only when "
                "self.training is True; eval must leave them unchanged")
    if all(not k for k in failed_keys):
        return ""
    for mistake in mistakes:
        keys = [{k for k in fk if not mistake.only or any(o in k for o in mistake.only)} for fk in failed_keys]
        if any(keys) and _reproduces(mistake, learner, specs, keys, rtol, atol):
            return f"{mistake.name}: {mistake.hint}" if mistake.hint else mistake.name
    return ""


def _reproduces(mistake: ModuleMistake, learner, specs, keys, rtol, atol) -> bool:
    for (rec, _, _), spec, ks in zip(learner, specs, keys):
        if not ks:
            continue
        mine, err, _ = _record(mistake.cls, spec, torch.float64, torch.device("cpu"), forbid=False)
        if any(k not in mine or k not in rec or _same(rec[k], mine[k], rtol * 10, atol * 10) for k in ks):
            return False
    return True


def _default_device() -> torch.device:
    from bncourse.device import get_device

    return get_device(announce=False)


# ---------------------------------------------------------------------------------------------
# The known wrong modules (torch operations, one flag per mistake)
# ---------------------------------------------------------------------------------------------


class _BuggyBatchNorm(nn.Module):
    """A batch norm over (N, D) or (N, C, H, W) with switches that reproduce learners' mistakes."""

    dims: tuple | None = None  # reduction dims; None: (0,) for 2-D, (0, 2, 3) for 4-D
    update_in_train: bool = True
    biased_running_var: bool = False
    flipped_momentum: bool = False
    batch_stats_in_eval: bool = False
    unbiased_normalization: bool = False
    unbiased_rescaled: bool = False  # with unbiased_normalization: n / (n - 1) applied to the unbiased variance
    eps_outside_sqrt: bool = False
    eps_missing_in_eval: bool = False
    default_momentum: bool = False  # the momentum argument ignored: 0.1 always
    default_eps: bool = False       # the eps argument ignored: 1e-5 always
    affine_applied: bool = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        view = (1, -1) + (1,) * (x.dim() - 2)
        dims = self.dims if self.dims is not None else ((0,) if x.dim() == 2 else (0, 2, 3))
        correct_dims = (0,) if x.dim() == 2 else (0, 2, 3)
        if self.training or self.batch_stats_in_eval:
            mean = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, keepdim=True, unbiased=self.unbiased_normalization)
            if self.training and self.update_in_train and dims == correct_dims:
                with torch.no_grad():
                    n = x.numel() // x.shape[1]
                    m = 0.1 if self.default_momentum else self.momentum
                    m = 1 - m if self.flipped_momentum else m
                    batch_var = var * (1 if self.biased_running_var else n / (n - 1))
                    if self.unbiased_normalization:
                        batch_var = var * ((n - 1) / n if self.biased_running_var else 1)
                        if self.unbiased_rescaled:
                            batch_var = var * n / (n - 1)
                    self.running_mean.mul_(1 - m).add_(m * mean.reshape(-1))
                    self.running_var.mul_(1 - m).add_(m * batch_var.reshape(-1))
        else:
            mean, var = self.running_mean.view(view), self.running_var.view(view)
        eps = 1e-5 if self.default_eps else self.eps
        std = var.sqrt() + eps if self.eps_outside_sqrt else torch.sqrt(var + eps)
        if self.eps_missing_in_eval and not self.training:
            std = var.sqrt()
        x_hat = (x - mean) / std
        if not self.affine_applied:
            return x_hat
        return x_hat * self.weight.view(view) + self.bias.view(view)


def _buggy(name: str, **flags) -> type:
    return type(name, (_BuggyBatchNorm,), flags)


_BATCH_STATS_IN_EVAL = ModuleMistake(
    "batch statistics used in eval mode",
    "in eval mode normalize with running_mean and running_var (check self.training); the batch's own "
    "statistics are for training only",
    _buggy("BatchStatsInEval", batch_stats_in_eval=True),
    only=("eval: output",),
)


def _module_mistakes(spatial: bool) -> list[ModuleMistake]:
    wrong_dims = (
        [("per pixel position, dim 0 only", (0,)), ("per image and channel, dims (2, 3)", (2, 3)),
         ("per image, dims (1, 2, 3)", (1, 2, 3)), ("over all dimensions", (0, 1, 2, 3))]
        if spatial else [("per sample, dim 1", (1,)), ("over all dimensions", (0, 1))]
    )
    right = "dims (0, 2, 3): over the batch and every pixel, one mean and variance per channel" if spatial \
        else "dim 0: over the batch, one mean and variance per feature"
    return [
        ModuleMistake("running statistics not updated",
                      "in training mode, update running_mean and running_var after each batch: "
                      "running = (1 - momentum) * running + momentum * batch_statistic",
                      _buggy("NoUpdate", update_in_train=False)),
        ModuleMistake("momentum flipped",
                      "PyTorch's momentum (0.1) weighs the NEW batch: (1 - momentum) * running + momentum * batch "
                      "(Keras' 0.99 weighs the old value)",
                      _buggy("Flipped", flipped_momentum=True)),
        ModuleMistake("momentum argument ignored",
                      "use self.momentum (the constructor's argument) in the update, not the default 0.1: "
                      "e.g. update_running_stats(..., self.momentum)",
                      _buggy("DefaultMomentum", default_momentum=True)),
        ModuleMistake("eps argument ignored",
                      "use self.eps (the constructor's argument) everywhere, e.g. "
                      "BatchNormFunction.apply(x, self.weight, self.bias, self.eps), not the default 1e-5",
                      _buggy("DefaultEps", default_eps=True), only=("step 1: output",)),
        ModuleMistake("biased variance in running_var",
                      "normalize with the biased batch variance, but store the unbiased one (divide by n - 1, "
                      "n = values per channel) in running_var, as PyTorch does",
                      _buggy("BiasedRunningVar", biased_running_var=True)),
        ModuleMistake("biased variance in running_var and momentum flipped",
                      "momentum weighs the NEW batch, and running_var takes the unbiased batch variance (n - 1)",
                      _buggy("BiasedFlipped", biased_running_var=True, flipped_momentum=True)),
        ModuleMistake("normalized with the unbiased variance",
                      "the batch is normalized with its biased variance (divide by n, unbiased=False); only "
                      "running_var takes the unbiased one",
                      _buggy("UnbiasedNorm", unbiased_normalization=True)),
        ModuleMistake("unbiased variance from torch's var default, then n / (n - 1) again",
                      "x.var(...) divides by n - 1 unless told otherwise (np.var divides by n): normalize with "
                      "x.var(dim=..., unbiased=False), and multiply THAT by n / (n - 1) for running_var",
                      _buggy("UnbiasedTwice", unbiased_normalization=True, unbiased_rescaled=True)),
        ModuleMistake("eps outside the square root",
                      "divide by sqrt(var + eps), not sqrt(var) + eps",
                      _buggy("EpsOutside", eps_outside_sqrt=True)),
        ModuleMistake("eps missing in eval mode",
                      "eval mode normalizes with sqrt(running_var + eps), the same eps as training",
                      _buggy("EpsMissingInEval", eps_missing_in_eval=True), only=("eval: output",)),
        ModuleMistake("weight and bias not applied",
                      "after normalizing, scale by weight (gamma) and shift by bias (beta), per channel",
                      _buggy("NoAffine", affine_applied=False)),
        _BATCH_STATS_IN_EVAL,
    ] + [
        ModuleMistake(f"statistics over the wrong dimensions ({label})", f"reduce over {right}",
                      _buggy(f"Dims{i}", dims=dims), only=("step 1: output",))
        for i, (label, dims) in enumerate(wrong_dims)
    ]


# ---------------------------------------------------------------------------------------------
# The two module checks
# ---------------------------------------------------------------------------------------------


def _specs_1d(hidden: bool) -> list[Step]:
    if hidden:
        return [Step("N=6, D=3", (6, 3), 111),
                Step("N=12, D=5, eps=1e-3, momentum=0.2", (12, 5), 112, steps=4, kwargs={"eps": 1e-3, "momentum": 0.2})]
    return [Step("N=8, D=4", (8, 4), 101),
            Step("N=3, D=2, eps=1e-2, momentum=0.3", (3, 2), 102, kwargs={"eps": 1e-2, "momentum": 0.3})]


def _specs_2d(hidden: bool) -> list[Step]:
    if hidden:
        return [Step("N=3, C=4, H=2, W=3", (3, 4, 2, 3), 211),
                Step("N=5, C=2, H=4, W=4, eps=1e-3, momentum=0.3", (5, 2, 4, 4), 212, steps=4,
                     kwargs={"eps": 1e-3, "momentum": 0.3})]
    return [Step("N=4, C=3, H=5, W=6", (4, 3, 5, 6), 201),
            Step("N=2, C=4, H=3, W=3, eps=1e-2, momentum=0.2", (2, 4, 3, 3), 202,
                 kwargs={"eps": 1e-2, "momentum": 0.2})]


def check_batchnorm1d_module(cls, hidden: bool = False) -> CheckResult:
    """Does ``cls(D)`` behave like ``nn.BatchNorm1d(D)``: outputs, gradients, running stats over steps, eval?"""
    return check_module(
        "BatchNorm1dNumpy", cls, nn.BatchNorm1d, _specs_1d(hidden), _module_mistakes(spatial=False),
        device_spec=Step("N=10, D=3", (10, 3), 131 if hidden else 121), device=torch.device("cpu"),
    )


def check_batchnorm2d(cls, hidden: bool = False, device=None) -> CheckResult:
    """Does ``cls(C)`` behave like ``nn.BatchNorm2d(C)`` in float64 and on ``device`` (default: the current one)?"""
    return check_module(
        "BatchNorm2d", cls, nn.BatchNorm2d, _specs_2d(hidden), _module_mistakes(spatial=True),
        device_spec=Step("N=8, C=3, H=4, W=4", (8, 3, 4, 4), 231 if hidden else 221), device=device,
    )
