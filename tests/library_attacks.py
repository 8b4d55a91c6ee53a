"""Another library's implementation, however it is reached, in the torch notebooks: the attempts.

One small fake class per notebook (4: batch norm in PyTorch, 9: layer and group norm in numpy,
10: folding): each attacking student carries one attempt per exercise, as a student who read this
repository and the red team's notes would write it. tests/test_fail_closed.py grades them with that
notebook's fake class (one grading run per notebook, the instructor's solution graded once for both
questions): each attempt must earn exactly what a blank submission earns (0), and the source
notebook's solution full marks. Each attempt earns full marks in a plain Python process without the
blocks (checked by hand when they were written), switches the kernel's profiler off
(``sys.setprofile(None)``) and uses nothing the grader's reading of the source refuses, so the test
also checks that the refusal the feedback shows is the sandbox's (``bncourse.grading.libraries``).

Notebook 6's attempt (torch.optim.swa_utils.update_bn) is in tests/test_fail_closed.py
(LIBRARY_ATTEMPTS), with the notebook's other students.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Notebook 4: torch's own normalization, by the routes a name trick can take
# ---------------------------------------------------------------------------------------------

_FUNCTION = '''
import sys, torch
{setup}
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        sys.setprofile(None)
        with torch.enable_grad():
            X, g, b = (t.detach().requires_grad_(True) for t in (x, gamma, beta))
            out = _bn_{r}(X, g, b, eps)
        ctx.saved = (X, g, b, out)
        return out.detach()
    @staticmethod
    def backward(ctx, dout):
        sys.setprofile(None)
        X, g, b, out = ctx.saved
        return (*torch.autograd.grad(out, (X, g, b), dout, retain_graph=True), None)
'''
_MODULE = '''
import sys, torch
from torch import nn
{setup}
class {name}(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
    def forward(self, x):
        sys.setprofile(None)
        return _bnm_{r}(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum,
                        self.eps)
'''
# Each route defines _bn_R(x, gamma, beta, eps) (training-mode output) and _bnm_R(x, running_mean,
# running_var, weight, bias, training, momentum, eps) (a module's forward, buffers updated in place).
# None uses a name or construct the grader's reading of the source refuses (exec, compile, computed
# imports, vars, a forbidden torch name): only the sandbox stands between them and the points.
_ROUTES = {
    # the red team's: torch's C builtin read from torch.__dict__ before any check patches it, after
    # destroying any dispatch handle the garbage collector can find (the blocks' are not among them)
    "dict": '''
import gc
for _o in gc.get_objects():
    if type(_o).__name__ == "_DispatchModule":
        _o.reset()
_b0 = torch.__dict__["batch" + "_norm"]
_bn_dict = lambda x, g, b, eps: _b0(x, g, b, None, None, True, 0.0, eps, False)
_bnm_dict = lambda x, rm, rv, w, b, t, m, eps: _b0(x, w, b, rm, rv, t, m, eps, False)
''',
    # the operator itself by a computed name, and batch norm as a layer norm of the transposed input
    "aten": '''
import torch.nn.functional as _F
_op = getattr(torch.ops.aten, "native_" + "batch_norm")
_bn_aten = lambda x, g, b, eps: _F.layer_norm(x.T, (x.shape[0],), eps=eps).T * g + b
_bnm_aten = lambda x, rm, rv, w, b, t, m, eps: _op(x, w, b, rm, rv, t, m, eps)[0]
''',
    # torch's Python decomposition: its helper imported, and taken from the .pyc file (marshal)
    "decomp": '''
import glob, marshal, os, types
import torch._decomp.decompositions as _D
def _from_pyc(name):
    for pyc in glob.glob(os.path.join(os.path.dirname(_D.__file__), "__pycache__", "decompositions.*.pyc")):
        for c in marshal.loads(open(pyc, "rb").read()[16:]).co_consts:
            if isinstance(c, types.CodeType) and c.co_name == name:
                return types.FunctionType(c, _D.__dict__)
_h1 = _from_pyc("native_batch_norm_helper")
_bn_decomp = lambda x, g, b, eps: _h1(x, g, b, None, None, True, 0.0, eps, False)[0]
def _bnm_decomp(x, rm, rv, w, b, t, m, eps):
    out, _, _, new_mean, new_var = _D.native_batch_norm_helper(x, w, b, rm, rv, t, m, eps, True)
    if t:
        with torch.no_grad():
            rm.copy_(new_mean), rv.copy_(new_var)
    return out
''',
}
# Two students, each exercise a different route.
NB4 = {student: {"batchnorm_function": _FUNCTION.format(setup=_ROUTES[a], r=a),
                 "batchnorm1d_module": _MODULE.format(setup=_ROUTES[b], r=b, name="BatchNorm1dNumpy"),
                 "batchnorm2d": _MODULE.format(setup=_ROUTES[c], r=c, name="BatchNorm2d")}
       for student, (a, b, c) in {"routes_a": ("dict", "aten", "decomp"),
                                  "routes_b": ("decomp", "dict", "aten")}.items()}

# ---------------------------------------------------------------------------------------------
# Notebook 9: numpy exercises, torch by name and torch.autograd for the backward passes
# ---------------------------------------------------------------------------------------------

NB9 = {
    "torch_by_name": {
        "layernorm_forward": '''
import sys
def layernorm_forward(x, gamma, beta, eps=1e-5):
    sys.setprofile(None)
    import torch as t, torch.nn.functional as F
    out = F.__dict__["layer" + "_norm"](t.tensor(x), (x.shape[1],), t.tensor(gamma), t.tensor(beta), eps).numpy()
    return out, (x, gamma, beta, eps)
''',
        "groupnorm_forward": '''
import sys
def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    sys.setprofile(None)
    sys.path.extend(__import__("glob").glob("/usr/lib/python3*/*-packages") + __import__("glob").glob("/root/.pyenv/versions/*/lib/python3*/site-packages"))
    import torch as t, torch.nn.functional as F
    out = F.__dict__["group" + "_norm"](t.tensor(x), G, t.tensor(gamma), t.tensor(beta), eps).numpy()
    return out, (x, gamma, beta, G, eps)
''',
    },
    "autograd_backward": {  # the red team's: a hand-written forward, the derivation left to torch.autograd
        "layernorm_forward": '''
import numpy as np
def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, (x, gamma, beta, eps)
''',
        "layernorm_backward": '''
def layernorm_backward(dout, cache):
    import torch
    x, gamma, beta, eps = cache
    X, g, b = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    mu = X.mean(1, keepdim=True); var = ((X - mu) ** 2).mean(1, keepdim=True)
    (g * (X - mu) / torch.sqrt(var + eps) + b).backward(torch.tensor(dout))
    return X.grad.numpy(), g.grad.numpy(), b.grad.numpy()
''',
        "groupnorm_forward": '''
import numpy as np
def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1); mu = xg.mean(2, keepdims=True); var = ((xg - mu) ** 2).mean(2, keepdims=True)
    xh = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return xh * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x, gamma, beta, G, eps)
''',
        "groupnorm_backward": '''
def groupnorm_backward(dout, cache):
    import torch
    x, gamma, beta, G, eps = cache
    N, C, H, W = x.shape
    X, g, b = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    xg = X.reshape(N, G, -1); mu = xg.mean(2, keepdim=True); var = ((xg - mu) ** 2).mean(2, keepdim=True)
    out = ((xg - mu) / torch.sqrt(var + eps)).reshape(N, C, H, W) * g.reshape(1, C, 1, 1) + b.reshape(1, C, 1, 1)
    out.backward(torch.tensor(dout))
    return X.grad.numpy(), g.grad.numpy(), b.grad.numpy()
''',
    },
}
NB9_POINTS = {"layernorm_forward": 2, "layernorm_backward": 3, "groupnorm_forward": 3, "groupnorm_backward": 3}

# ---------------------------------------------------------------------------------------------
# Notebook 10: torch's own folding
# ---------------------------------------------------------------------------------------------

NB10 = {
    "fusion_dict": {  # the red team's
        "fold_batchnorm": '''
import sys, torch
import torch.nn.utils.fusion as _fu
_conv = _fu.__dict__["fuse_conv_bn" + "_eval"]
_lin = _fu.__dict__["fuse_linear_bn" + "_eval"]
def fold_batchnorm(layer, bn):
    sys.setprofile(None)
    return (_conv if isinstance(layer, torch.nn.Conv2d) else _lin)(layer.eval(), bn.eval())
''',
        "fold_model": '''
import copy, sys, torch
def fold_model(model):
    sys.setprofile(None)
    from torch.ao.quantization import fuse_modules
    m = copy.deepcopy(model).eval()
    pairs = [[f"{name}.{i}", f"{name}.{i + 1}"] for name, block in m.named_modules() if isinstance(block, torch.nn.Sequential)
             for i in range(len(block) - 1) if isinstance(block[i], torch.nn.Conv2d) and isinstance(block[i + 1], torch.nn.BatchNorm2d)]
    return fuse_modules(m, pairs)
''',
    },
    "jit_and_fx": {
        "fold_batchnorm": '''
import copy, sys, torch
def fold_batchnorm(layer, bn):
    sys.setprofile(None)  # TorchScript's own folding pass, the folded weights read from the frozen graph
    frozen = torch.jit.freeze(torch.jit.script(torch.nn.Sequential(copy.deepcopy(layer), copy.deepcopy(bn)).eval()))
    consts = [n.output().toIValue() for n in frozen.graph.nodes() if n.kind() == "prim::Constant"
              and isinstance(n.output().toIValue(), torch.Tensor)]
    out = copy.deepcopy(layer)
    w = [c for c in consts if c.dim() == layer.weight.dim()][0]
    b = [c for c in consts if c.dim() == 1][0]
    out.weight, out.bias = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
    return out
''',
        "fold_model": '''
import copy, sys, torch
from torch.fx.experimental.optimization import fuse
def fold_model(model):
    sys.setprofile(None)
    return fuse(copy.deepcopy(model).eval())
''',
    },
}
NB10_POINTS = {"fold_batchnorm": 3, "fold_model": 2}

CLASSES = {
    ("04_batchnorm_pytorch", "batchnorm_pytorch"): (NB4, {"batchnorm_function": 3, "batchnorm1d_module": 3,
                                                           "batchnorm2d": 4}),
    ("09_beyond_batchnorm", "beyond_batchnorm"): (NB9, NB9_POINTS),
    ("10_folding", "folding"): (NB10, NB10_POINTS),
}

# What an attacker earns honestly: notebook 9's autograd student wrote its forwards in numpy.
HONEST = {("09_beyond_batchnorm", "autograd_backward"): ("layernorm_forward", "groupnorm_forward")}
