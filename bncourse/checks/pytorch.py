"""Checks for notebook 4, "Batch norm in PyTorch": the learner's autograd.Function and modules.

- ``check_batchnorm_function(Fn)``: the learner's ``torch.autograd.Function`` with
  ``Fn.apply(x, gamma, beta, eps)`` for x (N, D). The check compares the forward with
  ``F.batch_norm`` (training mode), the gradients with autograd through ``nn.BatchNorm1d``, and
  runs ``torch.autograd.gradcheck`` in float64 itself.
- ``check_batchnorm1d_module(cls)``: the learner's module over that function, against
  ``nn.BatchNorm1d``: initial parameters and buffers, several training steps (outputs, gradients,
  running statistics), then eval (``bncourse.checks.stepping``).
- ``check_batchnorm2d(cls, device=None)``: the learner's ``BatchNorm2d`` in torch operations,
  against ``nn.BatchNorm2d``, in float64 on the CPU and in float32 on the current device.

``hidden=True`` runs other seeds, shapes, ``eps`` and ``momentum``. Known wrong modules are small
subclasses of one correct module (in ``bncourse.checks.catalogue.pytorch``), each overriding the one piece a learner gets wrong. The
learner's code may not call torch's own batch norm while it is checked (``torch_guard``), nor the
course's ``bncourse.nn`` classes of the same name.

The contract: the function's ``out`` in x's dtype and device, gradients of x's, gamma's and beta's
shapes; x, gamma, beta and dout unchanged by forward and backward. A module's outputs in x's dtype,
its buffers changed in place in training only, the input batch unchanged by ``forward``. Visible
cases use eps 0.1 (the function) and eps and momentum other than the defaults (the modules).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.checks import replay
from bncourse.checks import catalogue
from bncourse.checks.calls import kept
from bncourse.checks.core import Case, CaseResult, CheckResult, Symptom, check_function, combine
from bncourse.checks.inputs import hidden_case_seed
from bncourse.checks.stepping import Step, check_module
from bncourse.checks.torch_guard import explain, no_builtin_batchnorm, quiet, to_numpy

__all__ = ["check_batchnorm_function", "check_batchnorm1d_module", "check_batchnorm2d"]

# ---------------------------------------------------------------------------------------------
# (a) The learner's autograd.Function
# ---------------------------------------------------------------------------------------------

FUNCTION_OUTPUTS = ("out", "dx", "dgamma", "dbeta")


class ForwardReturnedNumpy(TypeError):
    """The learner's forward returned a numpy array where autograd needs a tensor."""


class NotConnected(RuntimeError):
    """The learner's forward returned a tensor with no gradient history."""


def _explain_function(error_type: str, text: str) -> str:
    if error_type == ForwardReturnedNumpy.__name__:
        return ("forward returned a numpy array: convert it back, "
                "torch.from_numpy(out).to(device=x.device, dtype=x.dtype)")
    if error_type == "GradcheckError":
        return "backward does not compute the gradient of forward (torch.autograd.gradcheck failed)"
    return explain(error_type, text)


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


def _function_runner(Fn):
    """(x, gamma, beta, dout, eps) numpy -> (out, dx, dgamma, dbeta) numpy, through ``Fn.apply``."""
    def run(x, gamma, beta, dout, eps):
        xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        dt = torch.tensor(dout)
        with no_builtin_batchnorm(), quiet(), kept(x=xt, gamma=gt, beta=bt, dout=dt):
            out = Fn.apply(xt, gt, bt, eps)
            if isinstance(out, np.ndarray):
                raise ForwardReturnedNumpy("forward returned a numpy array, expected a tensor")
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, expected a tensor")
            if tuple(out.shape) != tuple(x.shape):
                raise ValueError(f"forward returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
            if out.grad_fn is None:
                raise NotConnected("the output has no grad_fn: return a new tensor from forward, not one detached later")
            out.backward(dt.to(dtype=out.dtype, device=out.device))
        return to_numpy(out), to_numpy(xt.grad), to_numpy(gt.grad), to_numpy(bt.grad)
    return run


def _function_reference(x, gamma, beta, dout, eps):
    """The oracle: the output of F.batch_norm in training mode, the gradients of autograd through nn.BatchNorm1d."""
    xt = torch.tensor(x, requires_grad=True)
    with quiet():
        out = F.batch_norm(xt.detach(), None, None, weight=torch.tensor(gamma), bias=torch.tensor(beta),
                           training=True, eps=eps)
        bn = nn.BatchNorm1d(x.shape[1], eps=eps, dtype=xt.dtype)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(gamma))
            bn.bias.copy_(torch.tensor(beta))
        bn(xt).backward(torch.tensor(dout))
    return to_numpy(out), to_numpy(xt.grad), to_numpy(bn.weight.grad), to_numpy(bn.bias.grad)


def _wrong_dtype(got) -> str:
    wrong = [(k, v.dtype) for k, v in got.items() if isinstance(v, np.ndarray) and v.dtype != np.float32]
    return (f"wrong dtype ({wrong[0][0]} has dtype {wrong[0][1]}, expected float32): convert back in the input's "
            "dtype, torch.from_numpy(out).to(device=x.device, dtype=x.dtype), and the gradients in dout's") if wrong else ""


_FLOAT32 = [Symptom("wrong dtype", "", lambda got: bool(_wrong_dtype(got)), describe=_wrong_dtype)]


def _function_cases(hidden: bool) -> tuple[list[Case], list[Case]]:
    """(float64 cases, float32 cases)."""
    if hidden:
        s = lambda name: hidden_case_seed("BatchNormFunction", name)  # noqa: E731
        return ([Case("N=5, D=2", _fn_case(s("N=5, D=2"), 5, 2)),
                 Case("N=3, D=6, eps=0.01", _fn_case(s("N=3, D=6, eps=0.01"), 3, 6, eps=1e-2)),
                 Case("N=32, D=4", _fn_case(s("N=32, D=4"), 32, 4, offset=10.0))],
                [Case("N=7, D=5 (float32 in, float32 out)", _fn_case(s("N=7, D=5 float32"), 7, 5, dtype=np.float32))])
    return ([Case("N=8, D=3", _fn_case(0, 8, 3)), Case("N=2, D=4 (smallest batch)", _fn_case(1, 2, 4)),
             Case("N=16, D=5, eps=0.1", _fn_case(2, 16, 5, eps=0.1))],
            [Case("N=10, D=3 (float32 in, float32 out)", _fn_case(3, 10, 3, dtype=np.float32))])


def _gradcheck_runner(Fn):
    """(x, gamma, beta, eps) -> array([1.0]) when torch.autograd.gradcheck passes ``Fn.apply`` in float64."""
    def run(x, gamma, beta, eps):
        inputs = tuple(torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)) + (eps,)
        with no_builtin_batchnorm(), quiet():
            ok = torch.autograd.gradcheck(Fn.apply, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
        return np.array([1.0 if ok is True else 0.0])
    return run


def _gradcheck_case(hidden: bool) -> Case:
    n, d, seed = (5, 3, hidden_case_seed("BatchNormFunction", "gradcheck")) if hidden else (4, 3, 20)
    return Case(f"torch.autograd.gradcheck (float64, N={n}, D={d})", lambda: _fn_case(seed, n, d)()[:3] + (1e-5,))


def check_batchnorm_function(Fn, hidden: bool = False) -> CheckResult:
    """Does ``Fn.apply(x, gamma, beta, eps)`` match F.batch_norm, with autograd's gradients, and pass gradcheck?

    Fn: the learner's ``torch.autograd.Function`` subclass (the class itself, not an instance).
    """
    exercise = "BatchNormFunction"
    if not replay.replaying() and not (isinstance(Fn, type) and issubclass(Fn, torch.autograd.Function)):
        return CheckResult(exercise, [CaseResult("setup", False, "expected a torch.autograd.Function subclass, "
                                                 f"got {type(Fn).__name__}", kind="returned")],
                           diagnosis="pass the class itself, e.g. check_batchnorm_function(BatchNormFunction)")
    cases64, cases32 = _function_cases(hidden)
    options = dict(outputs=FUNCTION_OUTPUTS, forbid_torch="batch_norm", explain_error=_explain_function)
    with quiet():
        r64 = check_function(exercise, _function_runner(Fn), _function_reference, cases64, catalogue.lazy("BatchNormFunction"),
                             rtol=1e-6, atol=1e-8, **options)
        r32 = check_function(exercise, _function_runner(Fn), _function_reference, cases32,
                             lambda: _FLOAT32 + catalogue.mistakes("BatchNormFunction"),
                             rtol=1e-3, atol=1e-4, **options)
        rgrad = check_function("BatchNormFunction (gradcheck)", _gradcheck_runner(Fn), lambda *a: np.array([1.0]),
                               [_gradcheck_case(hidden)], outputs=("passed",), rtol=0, atol=0, check_dtype=False,
                               forbid_torch="batch_norm", explain_error=_explain_function)
    result = combine(exercise, r64, r32, rgrad)
    result.tolerance = "float64: rtol=1e-06, atol=1e-08; float32: rtol=1e-03, atol=1e-04; gradcheck: eps=1e-6, atol=1e-5"
    return result


# ---------------------------------------------------------------------------------------------
# (b), (c) Modules, stepped next to torch's (bncourse.checks.stepping); known wrong ones in the catalogue
# ---------------------------------------------------------------------------------------------


def _steps_1d(hidden: bool) -> list[Step]:
    if hidden:
        s = lambda name: hidden_case_seed("BatchNorm1dNumpy", name)  # noqa: E731
        return [Step("N=6, D=3", (6, 3), s("N=6, D=3")),
                Step("N=12, D=5, eps=1e-3, momentum=0.2", (12, 5), s("N=12, D=5"), steps=4,
                     kwargs={"eps": 1e-3, "momentum": 0.2})]
    return [Step("N=8, D=4", (8, 4), 101),
            Step("N=3, D=2, eps=1e-2, momentum=0.3", (3, 2), 102, kwargs={"eps": 1e-2, "momentum": 0.3})]


def _steps_2d(hidden: bool) -> list[Step]:
    if hidden:
        s = lambda name: hidden_case_seed("BatchNorm2d", name)  # noqa: E731
        return [Step("N=3, C=4, H=2, W=3", (3, 4, 2, 3), s("N=3, C=4")),
                Step("N=5, C=2, H=4, W=4, eps=1e-3, momentum=0.3", (5, 2, 4, 4), s("N=5, C=2"), steps=4,
                     kwargs={"eps": 1e-3, "momentum": 0.3})]
    return [Step("N=4, C=3, H=5, W=6", (4, 3, 5, 6), 201),
            Step("N=2, C=4, H=3, W=3, eps=1e-2, momentum=0.2", (2, 4, 3, 3), 202, kwargs={"eps": 1e-2, "momentum": 0.2})]


def check_batchnorm1d_module(cls, hidden: bool = False) -> CheckResult:
    """Does ``cls(D)`` behave like ``nn.BatchNorm1d(D)``: initial state, outputs, gradients, running stats, eval?"""
    return check_module("BatchNorm1dNumpy", cls, nn.BatchNorm1d, _steps_1d(hidden), catalogue.lazy("BatchNorm1dNumpy"), device_step=Step("N=10, D=3", (10, 3),
                                                         hidden_case_seed("BatchNorm1dNumpy", "device") if hidden else 121),
                        device=torch.device("cpu"), forbidden=("BatchNormFunction",))


def check_batchnorm2d(cls, hidden: bool = False, device=None) -> CheckResult:
    """Does ``cls(C)`` behave like ``nn.BatchNorm2d(C)`` in float64 and on ``device`` (default: the current one)?"""
    return check_module("BatchNorm2d", cls, nn.BatchNorm2d, _steps_2d(hidden), catalogue.lazy("BatchNorm2d"),
                        device_step=Step("N=8, C=3, H=4, W=4", (8, 3, 4, 4),
                                         hidden_case_seed("BatchNorm2d", "device") if hidden else 221), device=device,
                        # "in torch operations only": not exercise 1's numpy reference (red team 5's F2)
                        forbidden=("batchnorm_forward", "batchnorm_backward", "update_running_stats"),
                        # and by value, whatever route reaches numpy: autograd differentiates torch operations
                        # twice, a numpy round trip not at all
                        second_order=True)


# Every mistake each check can name (tests write each one the way a learner would and expect its name).
