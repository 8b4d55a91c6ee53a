"""Red team 3's attempts through a process of their own, as submissions (``test_fail_closed.LIBRARY_ATTEMPTS``).

- notebook 10: torch.jit.freeze's C++ conv-bn fold computed in a child Python the kernel starts
  (attacks/nb10_subprocess_fold.py: 5/5 before): no process can start there;
- notebook 8: the batch all_gather'ed on the ranks and torch's batch norm run on the whole of it, in
  a child Python a rank starts (the forward) and in the rank itself (the backward)
  (attacks/nb8_torch_bn.py: 8/8 before): notebook 8's rule is in every process that imports torch.

Notebook 4's child process (attacks/nb4_subprocess.py) is the ``subprocess`` student of
``tests/test_attacks_native.py``.
"""


# Notebook 10: torch.jit.freeze's C++ conv-bn fold in a child, torch.save/torch.load over its pipes.
_CHILD_FOLD = r'''
import io, struct, sys, warnings
warnings.filterwarnings("ignore")
import torch
from torch import nn
i, o = sys.stdin.buffer, sys.stdout.buffer
while True:
    h = i.read(8)
    if len(h) < 8:
        break
    layer, bn = torch.load(io.BytesIO(i.read(struct.unpack("<Q", h)[0])), weights_only=False)
    f = torch.jit.freeze(torch.jit.script(nn.Sequential(layer, bn).eval()))
    got = {n.output().debugName(): n.output().toIValue() for n in f.graph.nodes()
           if n.kind() == "prim::Constant" and n.output().type().kind() == "TensorType"}
    w = [v for k, v in got.items() if k.endswith("weight_fused_bn")][0]
    b = [v for k, v in got.items() if k.endswith("_fused_bn") and not k.endswith("weight_fused_bn")][0]
    buf = io.BytesIO(); torch.save((w, b), buf); buf = buf.getvalue()
    o.write(struct.pack("<Q", len(buf)) + buf); o.flush()
'''
_NB10_FOLD = f'''import io, struct, subprocess, sys
_CHILD = {_CHILD_FOLD!r}
_PROC = []
def _ask(value):
    if not _PROC:
        _PROC.append(subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    p = _PROC[0]
    buf = io.BytesIO()
    torch.save(value, buf)
    p.stdin.write(struct.pack("<Q", len(buf.getvalue())) + buf.getvalue())
    p.stdin.flush()
    n = struct.unpack("<Q", p.stdout.read(8))[0]
    return torch.load(io.BytesIO(p.stdout.read(n)), weights_only=False)
def fold_batchnorm(layer, bn):
    w, b = _ask((copy.deepcopy(layer).cpu(), copy.deepcopy(bn).cpu().eval()))
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(w.to(layer.weight))
    folded.bias = nn.Parameter(b.to(layer.weight))
    return folded
'''
_NB10_MODEL = '''def fold_model(model):
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fold_batchnorm(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return folded
'''
NB10 = {"child_fold": {"fold_batchnorm": _NB10_FOLD, "fold_model": _NB10_MODEL}}

# Notebook 8: the batch all_gather'ed on the ranks, torch's batch norm on the whole of it: in a child
# Python the rank starts (processes are allowed here) or in the rank itself.
_GATHER = '''def _gather_rows(t):
    import torch
    import torch.distributed as dist
    ws, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(ws)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.int64))
    sizes = [int(s.item()) for s in sizes]
    pad = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype)
    pad[:t.shape[0]] = t
    parts = [torch.empty_like(pad) for _ in range(ws)]
    dist.all_gather(parts, pad)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sum(sizes[:rank])
'''
_NB8_FORWARD = _GATHER + '''
def _bn(*args):
    import torch
    return torch.ops.aten.native_batch_norm(*args)

def sync_batch_norm_forward(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    xall, start = _gather_rows(x.detach())
    out, mean, invstd = _bn(xall, weight, bias, running_mean, running_var, True, momentum, eps)[:3]
    x_hat = _bn(xall, None, None, None, None, True, 0.0, eps)[0]
    rows = slice(start, start + x.shape[0])
    return out[rows].to(x.dtype), SyncBNCache(x_hat[rows].to(x.dtype), invstd.to(x.dtype), weight, xall.shape[0])
'''
_NB8_CHILD = r'''
import pickle, sys, torch
args = pickle.load(sys.stdin.buffer)
out = torch.ops.aten.native_batch_norm(*args)
pickle.dump((*out, args[3], args[4]), sys.stdout.buffer)
'''
_NB8_CHILD_FORWARD = _NB8_FORWARD.replace('''def _bn(*args):
    import torch
    return torch.ops.aten.native_batch_norm(*args)''', f'''def _bn(*args):
    import pickle, subprocess, sys
    done = subprocess.run([sys.executable, "-c", {_NB8_CHILD!r}], input=pickle.dumps(args), capture_output=True)
    if done.returncode:
        raise RuntimeError(done.stderr.decode()[-500:])
    out = pickle.loads(done.stdout)
    if args[3] is not None:
        args[3].copy_(out[3]); args[4].copy_(out[4])
    return out''')
_NB8_BACKWARD = _GATHER + '''
def sync_batch_norm_backward(dy, cache):
    import torch
    x_hat, invstd, weight, n = cache
    invstd = invstd.reshape(-1)
    centered = x_hat / invstd
    dy_all, start = _gather_rows(dy)
    c_all, _ = _gather_rows(centered)
    zero = torch.zeros_like(invstd)
    dx = torch.ops.aten.native_batch_norm_backward(dy_all, c_all, weight, None, None, zero, invstd, True, 0.0,
                                                   [True, False, False])[0]
    _, dw, db = torch.ops.aten.native_batch_norm_backward(dy, centered, weight, None, None, zero, invstd, True, 0.0,
                                                          [False, True, True])
    return dx[start:start + dy.shape[0]], dw, db
'''
# One student, both routes (one grading kernel less): the forward in a child, the backward in the rank.
NB8 = {"child_and_rank_bn": {"sync-forward": _NB8_CHILD_FORWARD, "sync-backward": _NB8_BACKWARD}}
