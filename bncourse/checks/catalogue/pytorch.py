"""The catalogue's entries for notebook 4: the autograd.Function and the BatchNorm1d/2d modules.

Known wrong ``autograd.Function`` classes (the numpy forward and backward inside one, with one part
wrong), and known wrong batch-norm modules: one small subclass per mistake. The Function's entries
and the modules' training backward also take notebook 3's (N, D) backward entries and notebook 2's
forward entries as they are declared there (``catalogue.mistakes``), not copies.

``Correct`` is batch norm over (N, D) or (N, C, H, W) in torch operations, split into the pieces
learners get wrong (reduction dims, the batch variance, what running_var stores, the momentum's
weight, eps, the affine step, when batch statistics are used, the update). Each mistake overrides
one piece; ``module_mistakes(spatial)`` lists them with the name and hint the learner reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bncourse.checks.core import Mistake
from bncourse.checks.pytorch import _function_runner
from bncourse.checks.catalogue.shared import affine, blend, inv_std
from bncourse.checks.stepping import ModuleMistake
from bncourse.reference.batchnorm import batchnorm_backward, batchnorm_forward

__all__ = ["Correct", "IGNORES_TRAINING", "module_mistakes", "ENTRIES"]


class Correct(nn.Module):
    """Batch norm over (N, D) or (N, C, H, W) in torch operations, split into the pieces learners get wrong.

    ``slip``: a shared slip (``catalogue.shared``) passed to the shared steps it turns (the square root and
    eps, gamma and beta, the running update); the other mistakes override one method.
    """

    slip = ""
    detached = ""  # "mean", "var" or both: statistics .detach()ed, so the gradient skips them

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def dims(self, x):
        return (0,) if x.dim() == 2 else (0, 2, 3)

    def batch_var(self, x, dims):
        return x.var(dim=dims, keepdim=True, unbiased=False)

    def stored_var(self, var, n):  # what running_var takes from the batch
        return var * n / (n - 1)

    def std(self, var):
        return 1 / inv_std(var, self.eps, self.slip)

    def batch_statistics(self):
        return self.training

    def update(self, mean, var, n):
        if self.training:
            self.blend_in(mean, var, n)

    def blend_in(self, mean, var, n):
        with torch.no_grad():
            self.running_mean.copy_(blend(self.running_mean, mean.reshape(-1), self.momentum, self.slip))
            self.running_var.copy_(blend(self.running_var, self.stored_var(var, n).reshape(-1), self.momentum,
                                         self.slip))

    def affine(self, x_hat, view):
        return affine(x_hat, self.weight.view(view), self.bias.view(view), self.slip)

    def forward(self, x):
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.batch_statistics():
            dims = self.dims(x)
            mean, var = x.mean(dim=dims, keepdim=True), self.batch_var(x, dims)
            mean, var = (mean.detach() if "mean" in self.detached else mean), (var.detach() if "var" in self.detached else var)
            if dims == ((0,) if x.dim() == 2 else (0, 2, 3)):
                self.update(mean, var, x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean.view(view), self.running_var.view(view)
        return self.affine((x - mean) / self.std(var), view)


class _BuffersReplaced(Correct):
    """The running statistics assigned anew each step (self.running_mean = ...) instead of written into."""

    def blend_in(self, mean, var, n):
        with torch.no_grad():
            self.running_mean = blend(self.running_mean, mean.reshape(-1), self.momentum, self.slip)
            self.running_var = blend(self.running_var, self.stored_var(var, n).reshape(-1), self.momentum, self.slip)


class _NoUpdate(Correct):
    def update(self, mean, var, n):
        pass


def _slipped(slip: str, base: type = Correct) -> type:
    """``base`` with one shared slip."""
    return type(f"_Slip[{slip}]", (base,), {"slip": slip})


_Flipped = _slipped("momentum-flipped")
_DefaultMomentum = _slipped("momentum-hard-coded")
_DefaultEps = _slipped("eps-hard-coded")


class _BiasedRunningVar(Correct):
    def stored_var(self, var, n):
        return var


_BiasedFlipped = _slipped("momentum-flipped", _BiasedRunningVar)


class _UnbiasedNorm(Correct):
    def batch_var(self, x, dims):
        return x.var(dim=dims, keepdim=True, unbiased=True)

    def stored_var(self, var, n):
        return var


class _UnbiasedTwice(_UnbiasedNorm):
    def stored_var(self, var, n):
        return var * n / (n - 1)


_EpsOutside = _slipped("eps-outside-sqrt")
_NoAffine = _slipped("gamma-and-beta-not-applied")


class _EpsMissingInEval(Correct):
    def std(self, var):
        return 1 / inv_std(var, self.eps, "" if self.training else "eps-missing")


class _BatchStatsInEval(Correct):
    def batch_statistics(self):
        return True


class _IgnoresTraining(_BatchStatsInEval):
    def update(self, mean, var, n):
        self.blend_in(mean, var, n)


class _CorrectionWithImages(Correct):
    """running_var's n / (n - 1) with n = N, the number of images, instead of the N*H*W values per channel."""

    def forward(self, x):
        self._images = x.shape[0]
        return super().forward(x)

    def stored_var(self, var, n):
        return var * self._images / (self._images - 1)


class _EpsInRunningVar(Correct):
    """eps blended into running_var during training, then added again under the square root in eval."""

    def stored_var(self, var, n):
        return var * n / (n - 1) + self.eps


class _StdInRunningVar(Correct):
    def stored_var(self, var, n):
        return (var * n / (n - 1)) ** 0.5


def _detached(which: str) -> type:
    return type(f"_Detached[{which}]", (Correct,), {"detached": which})


_DETACHED = (  # (which, name, hint)
    ("mean var", "dx missing the paths through the mean and the variance (the batch statistics .detach()ed, or left "
                 "out of the backward)",
     "the statistics are functions of x: keep them in the graph (no .detach(), no torch.no_grad()) while computing "
     "the output, detaching only what updates the running buffers; a hand-written backward needs the -sum(g) and "
     "-x_hat * sum(g * x_hat) terms"),
    ("var", "dx missing the path through the variance (the batch variance .detach()ed, or left out of the backward)",
     "the variance is a function of x: keep it in the graph while computing the output; detach only for the "
     "running buffers' update"),
    ("mean", "dx missing the path through the mean (the batch mean .detach()ed, or left out of the backward)",
     "the mean is a function of x: keep it in the graph while computing the output; detach only for the running "
     "buffers' update"),
)


def _backward_module(backward) -> type:
    """``Correct`` whose training forward runs a Function with ``backward`` (an (N, D) backward entry) on the
    (N, D) rows (BatchNorm1dNumpy over its Function; BatchNorm2d's channels as the rows' features)."""
    function = _backward_function(backward)

    def forward(self, x):
        if not self.training:
            return Correct.forward(self, x)
        dims = self.dims(x)
        mean, var = x.mean(dim=dims, keepdim=True), self.batch_var(x, dims)
        self.update(mean, var, x.numel() // x.shape[1])
        rows = x if x.dim() == 2 else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        out = function.apply(rows, self.weight, self.bias, self.eps)
        return out if x.dim() == 2 else out.reshape(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)
    return type("_BackwardModule", (Correct,), {"forward": forward})


# an (N, D) backward entry's outputs, as a module's recorded gradients
_MODULE_GRADIENTS = {"dx": "step 1: dx", "dgamma": "step 1: dweight", "dbeta": "step 1: dbias"}


def _backward_module_mistakes() -> list[ModuleMistake]:
    """Every (N, D) backward entry of notebook 3 (``catalogue.mistakes("batchnorm_backward")``), made by a
    module's training backward."""
    from bncourse.checks.catalogue import mistakes

    return [ModuleMistake(m.name, m.hint, _backward_module(m.fn), only=tuple(_MODULE_GRADIENTS[k] for k in
                                                                             (m.only or _MODULE_GRADIENTS)), id=m.id)
            for m in mistakes("batchnorm_backward")]


def _wrong_dims(dims: tuple) -> type:
    return type(f"_Dims{dims}", (Correct,), {"dims": lambda self, x: dims})


IGNORES_TRAINING = ModuleMistake(
    "ignores self.training",
    "in eval mode (self.training is False) normalize with running_mean and running_var and leave them unchanged; "
    "batch statistics and updates are for training only", _IgnoresTraining,
    only=("eval: output", "eval: running_mean afterwards", "eval: running_var afterwards"), first=True)


def module_mistakes(spatial: bool) -> list[ModuleMistake]:
    wrong_dims = (
        [("per pixel position, dim 0 only", (0,)), ("per image and channel, dims (2, 3)", (2, 3)),
         ("per image, dims (1, 2, 3)", (1, 2, 3)), ("over all dimensions", (0, 1, 2, 3)),
         ("per column, dims (0, 1, 2)", (0, 1, 2)), ("per row, dims (0, 1, 3)", (0, 1, 3)),
         ("per channel and column, dims (0, 2)", (0, 2)), ("per channel and row, dims (0, 3)", (0, 3)),
         ("per pixel, dims (0, 1)", (0, 1))]
        if spatial else [("per sample, dim 1", (1,)), ("over all dimensions", (0, 1))]
    )
    right = ("dims (0, 2, 3): over the batch and every pixel, one mean and variance per channel" if spatial
             else "dim 0: over the batch, one mean and variance per feature")
    return [
        ModuleMistake("running statistics replaced by new tensors instead of updated in place",
                      "the buffers are the module's state (an optimizer, a state_dict view or another reference may "
                      "hold them): write the new values into them, self.running_mean.copy_(new) or "
                      "self.running_mean.mul_(1 - m).add_(m * mean) under torch.no_grad(), rather than "
                      "self.running_mean = new", _BuffersReplaced, only=("changed in place",), id="buffers-replaced"),
        ModuleMistake("running statistics not updated",
                      "in training mode, update running_mean and running_var after each batch: "
                      "running = (1 - momentum) * running + momentum * batch_statistic", _NoUpdate),
        ModuleMistake("momentum flipped",
                      "PyTorch's momentum (0.1) weighs the NEW batch: (1 - momentum) * running + momentum * batch "
                      "(Keras' 0.99 weighs the old value)", _Flipped),
        ModuleMistake("momentum argument ignored",
                      "use self.momentum (the constructor's argument) in the update, not the default 0.1", _DefaultMomentum),
        ModuleMistake("eps argument ignored",
                      "use self.eps (the constructor's argument) everywhere, e.g. "
                      "BatchNormFunction.apply(x, self.weight, self.bias, self.eps), not the default 1e-5",
                      _DefaultEps, only=("step 1: output",)),
        ModuleMistake("biased variance in running_var",
                      "normalize with the biased batch variance, but store the unbiased one (divide by n - 1, "
                      "n = values per channel) in running_var, as PyTorch does", _BiasedRunningVar),
        ModuleMistake("biased variance in running_var and momentum flipped",
                      "momentum weighs the NEW batch, and running_var takes the unbiased batch variance (n - 1)",
                      _BiasedFlipped),
        ModuleMistake("normalized with the unbiased variance",
                      "the batch is normalized with its biased variance (divide by n, unbiased=False); only "
                      "running_var takes the unbiased one", _UnbiasedNorm),
        ModuleMistake("unbiased variance from torch's var default, then n / (n - 1) again",
                      "x.var(...) divides by n - 1 unless told otherwise (np.var divides by n): normalize with "
                      "x.var(dim=..., unbiased=False), and multiply THAT by n / (n - 1) for running_var", _UnbiasedTwice),
        ModuleMistake("eps outside the square root", "divide by sqrt(var + eps), not sqrt(var) + eps", _EpsOutside),
        # judged on running_var alone: with eps=1e-5 its eval output is within the naming tolerance of
        # "eps missing in eval mode", whose running_var is right
        ModuleMistake("eps stored in running_var during training and added again in eval",
                      "running_var holds the unbiased batch variance alone: blend in var * n / (n - 1); eps is "
                      "added only where the square root is taken, sqrt(running_var + eps)", _EpsInRunningVar,
                      only=("running_var",)),
        ModuleMistake("eps missing in eval mode",
                      "eval mode normalizes with sqrt(running_var + eps), the same eps as training",
                      _EpsMissingInEval, only=("eval: output",)),
        ModuleMistake("weight and bias not applied",
                      "after normalizing, scale by weight (gamma) and shift by bias (beta), per channel", _NoAffine),
        ModuleMistake("running_var updated with the standard deviation",
                      "running_var holds a variance: blend in the unbiased batch variance var * n / (n - 1), not its "
                      "square root", _StdInRunningVar),
        *([ModuleMistake("unbiased correction with n = N images instead of the N*H*W values per channel",
                         "each channel's variance averages n = N * H * W values (x.numel() // C): running_var takes "
                         "var * n / (n - 1) with that n", _CorrectionWithImages)] if spatial else []),
        ModuleMistake("batch statistics used in eval mode",
                      "in eval mode normalize with running_mean and running_var (check self.training); the batch's "
                      "own statistics are for training only", _BatchStatsInEval, only=("eval: output",)),
    ] + [ModuleMistake(f"statistics over the wrong dimensions ({label})", f"reduce over {right}", _wrong_dims(dims),
                       only=("step 1: output",)) for label, dims in wrong_dims] + [
        ModuleMistake(name, hint, _detached(which), only=("step 1: dx",), id="statistics-detached")
        for which, name, hint in _DETACHED]


class _NumpyFunction(torch.autograd.Function):
    """Correct: the numpy forward and backward inside an autograd.Function (the known mistakes override one part)."""

    @classmethod
    def numpy_forward(cls, x, gamma, beta, eps):
        return batchnorm_forward(x, gamma, beta, eps)

    @classmethod
    def numpy_backward(cls, dout, cache):
        return batchnorm_backward(dout, cache)

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        out, ctx.cache = ctx._forward_cls.numpy_forward(*(a.detach().cpu().double().numpy() for a in (x, gamma, beta)),
                                                         eps)
        return torch.from_numpy(out).to(x)

    @staticmethod
    def backward(ctx, dout):
        dx, dgamma, dbeta = ctx._forward_cls.numpy_backward(dout.detach().cpu().double().numpy(), ctx.cache)
        return tuple(torch.from_numpy(np.ascontiguousarray(g)).to(dout) for g in (dx, dgamma, dbeta)) + (None,)


class _EpsNotPassed(_NumpyFunction):
    @classmethod
    def numpy_forward(cls, x, gamma, beta, eps):
        return batchnorm_forward(x, gamma, beta)


class _GradientsSwapped(_NumpyFunction):
    @classmethod
    def numpy_backward(cls, dout, cache):
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        return dx, dbeta, dgamma


class _ConstantStatistics(_NumpyFunction):
    @classmethod
    def numpy_backward(cls, dout, cache):
        _, dgamma, dbeta = batchnorm_backward(dout, cache)
        return dout * cache.gamma * cache.inv_std, dgamma, dbeta


class _DoutAsDx(_NumpyFunction):
    @classmethod
    def numpy_backward(cls, dout, cache):
        _, dgamma, dbeta = batchnorm_backward(dout, cache)
        return dout.copy(), dgamma, dbeta


def _backward_function(backward) -> type:
    """The numpy Function whose backward is ``backward(dout, cache)`` (an (N, D) backward entry of notebook 3)."""
    return type("_Backward", (_NumpyFunction,), {"numpy_backward": classmethod(lambda cls, dout, cache: backward(dout, cache))})


def _forward_only(forward):
    """The Function's outputs as far as a wrong forward ``forward(x, gamma, beta, eps) -> (out, cache)`` decides
    them: out (its gradients are whatever the learner's backward made of that forward's cache)."""
    def run(x, gamma, beta, dout, eps):
        return forward(x, gamma, beta, eps)[0], None, None, None
    return run


def _function_mistakes() -> list:
    """The Function's own mistakes, then every (N, D) backward entry of notebook 3 run as its backward, then every
    forward entry of notebook 2 as its forward (declared once, in those notebooks' catalogue modules)."""
    from bncourse.checks.catalogue import mistakes

    return (_FUNCTION_OWN
            + [Mistake(m.name, m.hint, _function_runner(_backward_function(m.fn)), only=m.only, id=m.id)
               for m in mistakes("batchnorm_backward")]
            + [Mistake(m.name, m.hint, _forward_only(m.fn), only=("out",), id=m.id)
               for m in mistakes("batchnorm_forward")])


_FUNCTION_OWN = [
    Mistake("eps not passed on",
            "call your forward with the eps that apply() received, batchnorm_forward(x, gamma, beta, eps)",
            _function_runner(_EpsNotPassed)),
    Mistake("dgamma and dbeta swapped",
            "backward returns the gradients in the order of forward's inputs: (dx, dgamma, dbeta, None)",
            _function_runner(_GradientsSwapped)),
    Mistake("backward treats the batch mean and variance as constants",
            "x reaches the output also through the mean and the variance; use the full batchnorm_backward",
            _function_runner(_ConstantStatistics)),
    Mistake("backward passes dout through as dx", "dx comes from batchnorm_backward(dout, cache), not dout itself",
            _function_runner(_DoutAsDx)),
]


ENTRIES = {"BatchNormFunction": _function_mistakes,
           "BatchNorm1dNumpy": lambda: [IGNORES_TRAINING, *module_mistakes(spatial=False), *_backward_module_mistakes()],
           "BatchNorm2d": lambda: [IGNORES_TRAINING, *module_mistakes(spatial=True), *_backward_module_mistakes()]}
