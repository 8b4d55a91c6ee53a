"""The module-stepping engine: a learner's module class and torch's, stepped through the same protocol.

A ``Step`` builds ``cls(C, **kwargs)``, records its parameters and buffers as constructed (compared
with torch's: weight ones, bias zeros, running_mean zeros, running_var ones), sets seeded weight
and bias, runs ``steps`` training batches (outputs, the gradients of the first, the running
statistics after each), then one eval batch (output, buffers afterwards). Everything recorded is a
numpy array (``record``), so a run is plain data: ``check_module`` passes the learner's runs
through ``check_function`` (one call per step, each recorded for the grader) and the decision,
the table and the diagnosis all come from those arrays.

    check_module("BatchNorm2d", LearnerBN, nn.BatchNorm2d, [Step("N=4, C=3", (4, 3, 5, 5), 201)],
                 explanations, device_step=Step(...), device="cuda")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bncourse.checks import replay
from bncourse.checks.calls import kept
from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, Symptom, check_function, combine
from bncourse.checks.results import slug
from bncourse.checks.torch_guard import explain, no_builtin_batchnorm, quiet, to_numpy

__all__ = ["Step", "ModuleMistake", "check_module", "record", "DTYPE_FLAGS"]

DTYPE_FLAGS = "outputs in the input's dtype"
_REGISTRATION = ("registered as buffers: running_mean, running_var; as parameters: weight, bias")
_AS_PARAMETERS = "running_mean, running_var registered as parameters"
_NUM_BATCHES = "has num_batches_tracked"
BUFFERS_IN_PLACE = "running_mean, running_var still the module's own tensors after training (changed in place)"
EVAL_BACKPROPAGATES = "eval mode: the output has a gradient history (a module in eval mode still backpropagates)"
# Second order: a layer of torch operations gets it from autograd for free; a numpy round trip inside a
# Function of one's own cannot give it (red team 5's F2 by value, not by name).
SECOND_ORDER = "step 1: d(dx . v)/dx (autograd's second derivative)"
DIFFERENTIABLE_GRADIENT = "step 1: dx has a gradient history (autograd can differentiate it again)"
_NOT_COMPARED = (_NUM_BATCHES,)


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

    def args(self) -> tuple:
        """The step as plain arguments (receipts fingerprint ints, floats, None and arrays)."""
        return (self.seed, np.array(self.shape, dtype=np.int64), self.steps,
                self.kwargs.get("eps"), self.kwargs.get("momentum"))

    @classmethod
    def from_args(cls, seed, shape, steps, eps, momentum) -> "Step":
        kwargs = {k: v for k, v in (("eps", eps), ("momentum", momentum)) if v is not None}
        return cls("", tuple(int(n) for n in shape), int(seed), int(steps), kwargs)


@dataclass(frozen=True)
class ModuleMistake:
    """A known wrong module class; ``only``: substrings of the recorded keys it must reproduce (default: all).

    ``first``: tried before the symptom "running statistics updated in eval mode" (it explains that too).
    """

    name: str
    hint: str
    cls: type
    only: tuple = ()
    first: bool = False
    id: str = ""

    def __post_init__(self):
        object.__setattr__(self, "id", self.id or slug(self.name))


class ProtocolError(TypeError):
    """The learner's module does not fit the protocol (not an nn.Module, no weight, ...)."""


def _batch(gen: torch.Generator, shape: tuple, dtype, device) -> torch.Tensor:
    """Per-channel scales (channel 0 small, where eps matters) and offsets."""
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scales = torch.rand(c, generator=gen, dtype=torch.float64) * 2.5 + 0.5
    scales[0] = 0.05
    offsets = (torch.rand(c, generator=gen, dtype=torch.float64) - 0.5) * 6
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scales.view(view) + offsets.view(view)
    return x.to(device=device, dtype=dtype)


def _registration(module, c: int) -> dict:
    buffers, params, state = dict(module.named_buffers()), dict(module.named_parameters()), module.state_dict()
    for pname in ("weight", "bias"):
        p = getattr(module, pname, None)
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != (c,):
            raise ProtocolError(f"expected {pname} to be a tensor of shape ({c},), got {type(p).__name__}"
                                + (f" of shape {tuple(p.shape)}" if isinstance(p, torch.Tensor) else ""))
    return {
        _REGISTRATION: np.array([b in buffers and b in state for b in ("running_mean", "running_var")]
                                + [p in params for p in ("weight", "bias")]),
        _AS_PARAMETERS: np.array([b in params for b in ("running_mean", "running_var")]),
        _NUM_BATCHES: np.array([_NUM_BATCHES.split()[-1] in buffers]),
        **{f"initial {k}": to_numpy(getattr(module, k)) for k in ("weight", "bias", "running_mean", "running_var")},
    }


def _identity(module, name: str) -> tuple:
    """Which tensor ``module.<name>`` is: the object and its storage (``.data = new`` keeps the object only)."""
    t = getattr(module, name, None)
    return (id(t), t.data_ptr()) if isinstance(t, torch.Tensor) else (id(t), None)


def record(cls, step: Step, dtype, device, second_order: bool = False) -> dict:
    """Run ``step`` on a fresh ``cls``: every recorded value, as numpy arrays. Raises what the module raises.

    ``second_order``: also record autograd's derivative of the first batch's dx (along a seeded v)
    with respect to x, a Hessian-vector product: (N, C, ...) like x.
    """
    gen = torch.Generator().manual_seed(step.seed)
    c = step.shape[1]
    module = cls(c, **step.kwargs)
    if not isinstance(module, nn.Module):
        raise ProtocolError(f"the class made a {type(module).__name__}, expected an nn.Module")
    module.to(device=device, dtype=dtype)
    rec = _registration(module, c)
    with torch.no_grad():
        module.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
        module.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    module.train()
    own = [_identity(module, b) for b in ("running_mean", "running_var")]
    # Hold the original storages until the comparison: freed, their addresses could be reused by a
    # new buffer (a `.data = new` module then looked in place, now and then).
    own_storages = [getattr(module, b).untyped_storage() for b in ("running_mean", "running_var")
                    if isinstance(getattr(module, b, None), torch.Tensor)]
    for k in range(1, step.steps + 1):
        x = _batch(gen, step.shape, dtype, device).requires_grad_(k == 1)
        with kept(x=x):  # the caller's batch stays as it was (an in-place x -= mean changes it)
            out = module(x)
        if not isinstance(out, torch.Tensor):
            raise ProtocolError(f"forward returned {type(out).__name__}, expected a tensor")
        rec[f"step {k}: output"] = to_numpy(out)
        if k == 1:
            dout = torch.randn(step.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
            if out.grad_fn is None:
                raise ProtocolError("the output has no gradient: nothing connects it to x, weight and bias")
            if second_order:
                rec.update(_second_order(out, x, dout, gen))
            out.backward(dout)
            rec["step 1: dx"] = to_numpy(x.grad)
            rec["step 1: dweight"] = to_numpy(module.weight.grad)
            rec["step 1: dbias"] = to_numpy(module.bias.grad)
            rec["buffers track gradients"] = np.array(
                [bool(getattr(module, b).requires_grad) for b in ("running_mean", "running_var")])
        rec[f"step {k}: running_mean"] = to_numpy(module.running_mean)
        rec[f"step {k}: running_var"] = to_numpy(module.running_var)
    rec[BUFFERS_IN_PLACE] = np.array([_identity(module, b) == o for b, o in zip(("running_mean", "running_var"), own)])
    del own_storages
    module.eval()
    x = _batch(gen, step.shape, dtype, device).requires_grad_(True)
    with kept(x=x):
        out = module(x)
    if not isinstance(out, torch.Tensor):
        raise ProtocolError(f"forward returned {type(out).__name__} in eval mode, expected a tensor")
    rec["eval: output"] = to_numpy(out)
    # a module in eval mode still backpropagates (fine-tuning a frozen-statistics model, saliency maps)
    rec[EVAL_BACKPROPAGATES] = np.array([out.grad_fn is not None])
    dx = None
    if out.grad_fn is not None:  # the gradient reaching x only (a graph kept by tracked buffers is not walked)
        dout = torch.randn(step.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        dx = torch.autograd.grad(out, x, dout, allow_unused=True)[0]
    rec["eval: dx"] = to_numpy(dx) if dx is not None else np.zeros(step.shape, rec["eval: output"].dtype)
    rec["eval: running_mean afterwards"] = to_numpy(module.running_mean)
    rec["eval: running_var afterwards"] = to_numpy(module.running_var)
    rec[DTYPE_FLAGS] = np.array([rec[k].dtype == np.dtype(str(dtype).split(".")[-1])
                                 for k in rec if k.endswith("output")])
    return rec


def _second_order(out, x, dout, gen: torch.Generator) -> dict:
    """d(dx . v)/dx for dx = the gradient of out . dout: zeros, and the flag False, when dx has no history."""
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    try:
        dx = torch.autograd.grad(out, x, dout, create_graph=True, allow_unused=True)[0]
    except RuntimeError as err:  # torch.utils.checkpoint(use_reentrant=True) refuses .grad(): no second order
        if "reentrant" not in str(err):
            raise
        dx = None
    differentiable = dx is not None and dx.requires_grad
    hvp = torch.autograd.grad(dx, x, v, allow_unused=True, retain_graph=True)[0] if differentiable else None
    return {DIFFERENTIABLE_GRADIENT: np.array([differentiable]),
            SECOND_ORDER: to_numpy(hvp) if hvp is not None else np.zeros(tuple(x.shape), to_numpy(out).dtype)}


def runner(cls, dtype, device, keys: Sequence[str], guard: bool = True):
    """(seed, shape, steps, eps, momentum) -> the recorded values for ``keys``, as a tuple of arrays.

    Records the second order when ``keys`` asks for it."""
    def run(seed, shape, steps, eps, momentum):
        with (no_builtin_batchnorm() if guard else _nothing()), quiet():
            rec = record(cls, Step.from_args(seed, shape, steps, eps, momentum), dtype, device,
                         second_order=SECOND_ORDER in keys)
        return tuple(rec.get(k) for k in keys)
    return run


class _KeysOnly(nn.Module):
    """Stands in for the reference module in a grading kernel, which only records (and in which
    torch's batch norm is blocked): ``record`` on it yields the reference's keys; its values are never used."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def _keys_of(reference_cls, step: Step, dtype, device, second_order: bool = False) -> list[str]:
    """The values ``record`` yields for ``reference_cls`` (from a stand-in while only recording)."""
    cls = _KeysOnly if replay.recording_only() else reference_cls
    return list(record(cls, step, dtype, device, second_order))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# Tried last (the catalogue's mistakes first: detached statistics also make the second derivative zero):
# a Function's forward runs outside autograd, so a backward written by hand from what it saved has a
# second derivative of zero with respect to x.
SECOND_ORDER_ZERO = Symptom(
    "the layer's gradient comes from a backward written by hand (its second derivative is zero)",
    "let autograd trace the whole layer in torch operations (mean, var, sqrt, arithmetic, view) instead of a "
    "Function of your own: autograd then derives the backward, and the backward of that, by itself",
    lambda got: SECOND_ORDER in got and not np.any(got[SECOND_ORDER]))


def _symptoms(steps: int) -> list[Symptom]:
    last = f"step {steps}"

    def updated_in_eval(got):
        return any(not np.array_equal(got[f"eval: {b} afterwards"], got[f"{last}: {b}"])
                   for b in ("running_mean", "running_var"))

    structural = [
        Symptom("running_mean or running_var is an nn.Parameter",
                "so the optimizer would train it: register it as a buffer, self.register_buffer('running_mean', ...)",
                lambda got: got[_AS_PARAMETERS].any()),
        Symptom("forgot to register buffers",
                "create them with self.register_buffer('running_mean', torch.zeros(num_features)) and "
                "self.register_buffer('running_var', torch.ones(num_features)), so that state_dict saves them "
                "and .to(device) moves them", lambda got: not got[_REGISTRATION][:2].all()),
        Symptom("weight or bias is not an nn.Parameter",
                "make weight (gamma) and bias (beta) nn.Parameter so the optimizer trains them",
                lambda got: not got[_REGISTRATION][2:].all()),
        Symptom("eval mode computed outside autograd (no gradient flows back to x in eval mode)",
                "a module in eval mode still backpropagates (fine-tuning with frozen statistics, gradients with "
                "respect to the input): compute the eval map weight * (x - running_mean) / sqrt(running_var + eps) "
                "+ bias in torch operations, not in numpy", lambda got: not got.get(EVAL_BACKPROPAGATES, np.array([True])).all()),
        Symptom("the layer's gradient is not built from torch operations (autograd cannot differentiate it again)",
                "write the layer with torch operations only (mean, var, sqrt, arithmetic, view): then autograd "
                "derives its backward, and the backward of that, by itself. A gradient autograd cannot "
                "differentiate comes from a Function of your own (a numpy round trip such as exercise 1's "
                "BatchNormFunction, or a backward written by hand) or from torch.utils.checkpoint with "
                "use_reentrant=True", lambda got: not got.get(DIFFERENTIABLE_GRADIENT, np.array([True])).all()),
        Symptom("the running statistics track gradients",
                "update them without autograd, inside `with torch.no_grad():` (or from mean.detach()), else every "
                "step extends the graph", lambda got: got["buffers track gradients"].any()),
        Symptom("initial parameters or buffers differ from torch's",
                "start as nn.BatchNorm does: weight ones, bias zeros, running_mean zeros, running_var ones",
                lambda got: not (np.all(got["initial weight"] == 1) and np.all(got["initial bias"] == 0)
                                 and np.all(got["initial running_mean"] == 0)
                                 and np.all(got["initial running_var"] == 1))),
    ]
    in_eval = Symptom("running statistics updated in eval mode",
                      "update running_mean and running_var only when self.training is True; eval must leave them "
                      "unchanged", updated_in_eval)
    return structural, in_eval


def _explanations(first: Sequence[ModuleMistake], mistakes, keys: Sequence[str], steps: int) -> list:
    """Registration and the like first, then ``first`` (and every mistake marked ``first``), the eval-mode
    symptom, then the other ``mistakes`` (a list, or a function returning one: the catalogue's)."""
    structural, in_eval = _symptoms(steps)
    entries = list(first) + list(mistakes() if callable(mistakes) else mistakes)

    def as_mistake(m: ModuleMistake) -> Mistake:
        chosen = tuple(k for k in keys if any(o in k for o in m.only))
        return Mistake(m.name, m.hint, runner(m.cls, torch.float64, torch.device("cpu"), keys, guard=False), chosen,
                       m.id)

    early = [m for i, m in enumerate(entries) if i < len(first) or m.first]
    late = [m for m in entries if m not in early]
    return structural + [as_mistake(m) for m in early] + [in_eval] + [as_mistake(m) for m in late] + [SECOND_ORDER_ZERO]


def check_module(exercise: str, cls, reference_cls, steps: Sequence[Step], mistakes=(), *,
                 first: Sequence[ModuleMistake] = (),
                 rtol: float = 1e-6, atol: float = 1e-8, device_step: Step | None = None, device=None,
                 rtol32: float = 1e-3, atol32: float = 1e-4, forbidden: Sequence[str] = (),
                 second_order: bool = False) -> CheckResult:
    """Step the learner's module class and ``reference_cls`` through the same training and eval protocol.

    ``first``: mistakes to try before the symptom "running statistics updated in eval mode".
    ``second_order``: also compare autograd's second derivative in the float64 steps (a layer of torch
    operations only).

    ``steps`` run in float64 on the CPU (tight tolerance, mistakes diagnosed there); ``device_step``
    runs once more in float32 on ``device`` (default: the current one) against the reference there.
    """
    if not replay.replaying() and not isinstance(cls, type):
        return CheckResult(exercise, [CaseResult("setup", False, f"expected a class, got {type(cls).__name__}",
                                                 kind="returned")],
                           diagnosis="pass the class itself (no parentheses), e.g. check(BatchNorm2d)")
    cpu = torch.device("cpu")
    results = []
    for step in steps:
        keys = [k for k in _keys_of(reference_cls, step, torch.float64, cpu, second_order) if k not in (DTYPE_FLAGS,)]
        compare = [k for k in keys if k not in _NOT_COMPARED]
        results.append(check_function(
            exercise, runner(cls, torch.float64, cpu, keys), runner(reference_cls, torch.float64, cpu, keys, False),
            [Case(step.name, step.args)], lambda keys=keys, step=step: _explanations(first, mistakes, keys, step.steps),
            outputs=keys, compare=compare, rtol=rtol, atol=atol, check_dtype=False, forbidden=forbidden,
            forbid_torch="batch_norm", explain_error=explain))
    if device_step is not None:
        dev = torch.device(device) if device is not None else _default_device()
        # first order only: float32's second derivative (1/var^2 terms, cancellations) is too rough to compare
        keys = [k for k in _keys_of(reference_cls, device_step, torch.float32, dev) if k not in _NOT_COMPARED]
        results.append(check_function(
            exercise, runner(cls, torch.float32, dev, keys), runner(reference_cls, torch.float32, dev, keys, False),
            [Case(f"float32 on {dev}, {device_step.name}", device_step.args)], _device_symptoms(dev),
            outputs=keys, rtol=rtol32, atol=atol32, check_dtype=False, forbidden=forbidden,
            forbid_torch="batch_norm", explain_error=explain))
    result = combine(exercise, *results)
    result.tolerance = f"float64: rtol={rtol:g}, atol={atol:g}; float32: rtol={rtol32:g}, atol={atol32:g}"
    got = result.cases[0].got
    if _NUM_BATCHES in got and not got[_NUM_BATCHES].all():
        result.notes.append(f"optional: nn.{reference_cls.__name__} also keeps a num_batches_tracked buffer (a counter "
                            "of training steps); without it, loading its state_dict needs strict=False")
    return result


def _device_symptoms(dev) -> list[Symptom]:
    return [Symptom(
        "float64 on the CPU matches, float32 on the device does not",
        f"keep every tensor in x's dtype and on x's device ({dev}). Write new running statistics into the buffers "
        "in place (self.running_mean.copy_(new)) rather than replacing them with a tensor of another dtype, and "
        "create new tensors with dtype=x.dtype, device=x.device", lambda got: True)]


def _default_device() -> torch.device:
    from bncourse.device import get_device

    return get_device(announce=False)
