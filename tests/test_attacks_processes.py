"""Can a learner get torch's own batch norm or folding from a process the kernel's blocks do not reach?

Red team 3's winning class: the blocks of ``bncourse.kernel_blocks`` live in one process, so a child
Python (``subprocess.Popen([sys.executable, "-c", ...])``) started from the kernel imports an
unblocked torch and computes ``native_batch_norm(_backward)`` (notebook 4, 10/10) or torch.jit.freeze's
C++ conv-bn fold (notebook 10, 5/5), and notebook 8, which had no rule at all, ran torch's batch norm
on the all_gather'ed batch in the check's own ranks (8/8). The answers:

- every kernel but notebook 8's starts no process (``bncourse.grading.sandbox.seccomp_filter``: a seccomp program;
  ``bncourse.kernel_guard``: an audit hook that refuses exec, spawn and subprocess by name);
- notebook 8 has a rule: torch's normalization is blocked in the kernel, in the check's ranks and in
  every process that imports torch (``bncourse.grading.torch_import_blocks``).

One graded class per notebook, 8 and 10 (the source notebook's solution and the red team's attempts):
each attempt earns what a blank submission earns (0), the solution full marks. Notebook 4's child
process (red team 3's nb4_subprocess) is a student of ``tests/test_attacks_native.py``'s graded class,
which costs no extra grading run there. Two cheap ``python -c``
runs under bubblewrap check the seccomp program (no fork, threads fine) and the guard (no exec in
place, no way to disarm it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import pytest

from attack_course import attack_course, generated, submit

pytestmark = pytest.mark.slow

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install bubblewrap", allow_module_level=True)

RULE = "runs no process but this kernel"

# ---------------------------------------------------------------------------------------------
# The seccomp program and the guard, in one sandboxed process each
# ---------------------------------------------------------------------------------------------

PROBE = r'''
import os, subprocess, sys, threading
import multiprocessing as mp
got = []
t = threading.Thread(target=got.append, args=(1,)); t.start(); t.join()
print("thread =>", got)
def attempt(name, fn):
    try:
        pid = fn()
        if pid == 0:
            os._exit(0)
        print(name, "=> LEAK")
    except OSError as e:
        print(name, "=>", type(e).__name__, e.errno)
attempt("fork", os.fork)
attempt("subprocess", lambda: subprocess.run(["true"]).returncode and 1)
attempt("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))
attempt("multiprocessing", lambda: mp.get_context("spawn").Process(target=print).start() or 1)
'''


def _sandboxed(code: str, tmp_path, **options) -> dict[str, str]:
    from bncourse.grading import sandbox, solution_free

    tmp_path.mkdir(parents=True, exist_ok=True)
    sandbox.Sandbox.prepare_writable(str(tmp_path))
    box = sandbox.Sandbox(library=str(solution_free.build()), **options)
    out = subprocess.run(box.command([sys.executable, "-c", code], str(tmp_path), str(tmp_path)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    return dict(line.split(" => ", 1) for line in out.stdout.splitlines() if " => " in line)


def test_does_the_seccomp_program_refuse_every_new_process_but_not_threads(tmp_path):
    lines = _sandboxed(PROBE, tmp_path / "no")
    assert lines.pop("thread") == "[1]"
    assert lines == dict.fromkeys(["fork", "subprocess", "posix_spawn", "multiprocessing"], "PermissionError 1"), lines
    # the control: an assignment that declares it needs processes gets them
    allowed = _sandboxed(PROBE, tmp_path / "yes", processes=True)
    assert all(v == "LEAK" for k, v in allowed.items() if k != "thread"), allowed


GUARD = r'''
import os, subprocess, sys, types
from bncourse.kernel_guard import install, _hook
install()
Refused = PermissionError
def attempt(name, fn):
    try:
        fn()
        print(name, "=> LEAK")
    except Refused as e:
        print(name, "=>", "refused" if "grading sandbox" in str(e) else str(e))
attempt("execv in place", lambda: os.execv(sys.executable, [sys.executable, "-c", "print('fresh')"]))
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("os.system", lambda: os.system("true"))
# disarm the hook: its code, its defaults, or the builtins and modules it could have looked up
attempt("replace the hook's code", lambda: setattr(_hook, "__code__", (lambda *a: None).__code__))
attempt("replace its defaults", lambda: setattr(_hook, "__defaults__", (frozenset(),) + _hook.__defaults__[1:]))
attempt("delete its defaults", lambda: delattr(_hook, "__defaults__"))
import builtins
builtins.PermissionError = type("Fine", (Exception,), {})
sys.modules["bncourse.kernel_guard"].REFUSED = frozenset()
attempt("execv after patching builtins and the module", lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]))
'''


def test_can_learner_code_neither_replace_the_kernel_nor_disarm_the_guard(tmp_path):
    lines = _sandboxed(GUARD, tmp_path, processes=True)  # processes allowed: only the guard stands in the way
    assert len(lines) == 7 and set(lines.values()) == {"refused"}, lines


# ---------------------------------------------------------------------------------------------
# The red team's attempts (attacks/nb10_subprocess_fold.py, nb8_torch_bn.py)
# ---------------------------------------------------------------------------------------------

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

NOTEBOOKS = {"08_batchnorm_across_devices": ("batchnorm_across_devices", NB8),
             "10_folding": ("folding", NB10)}


def _set(nb, grade_id: str, source: str) -> None:
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return
    raise KeyError(grade_id)


def _points(nb) -> dict[str, float]:
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"]) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}


@pytest.fixture(scope="module", params=sorted(NOTEBOOKS))
def graded(request, tmp_path_factory):
    """One notebook graded with the solution and its attackers: scores, points, the autograded notebooks."""
    from nbgrader.api import Gradebook

    from bncourse import grading
    from bncourse.grading import db_url_of

    assignment = request.param
    notebook, attackers = NOTEBOOKS[assignment]
    with attack_course(tmp_path_factory.mktemp("process-attacks"), cell_timeout=240) as (course, api):
        source_nb, release_nb = generated(course, api, assignment, notebook)
        submit(course, "solution", assignment, notebook, source_nb)
        for student, cells in attackers.items():
            nb = nbformat.reads(nbformat.writes(release_nb), as_version=4)
            for grade_id, source in cells.items():
                _set(nb, grade_id, source)
            submit(course, student, assignment, notebook, nb)
        report = grading.grade(assignment, course, jobs=2)
        with Gradebook(db_url_of(course)) as gb:
            scores = {(sub.student.id, g.name): g.score for sub in gb.assignment_submissions(assignment)
                      for nb in sub.notebooks for g in nb.grades}
        autograded = {who: nbformat.read(course / "autograded" / who / assignment / f"{notebook}.ipynb", 4)
                      for who in ("solution", *attackers)}
        yield {"assignment": assignment, "attackers": attackers, "points": _points(source_nb), "scores": scores,
               "report": report, "autograded": autograded}


def _outputs(nb) -> str:
    return "".join(str(o.get("text", "")) + str(o.get("ename", "")) + ": " + str(o.get("evalue", ""))
                   for c in nb.cells for o in c.get("outputs", []))


def test_does_a_process_of_its_own_earn_what_a_blank_submission_earns_and_the_solution_full_marks(graded):
    for student in ("solution", *graded["attackers"]):
        scores = {gid: s for (who, gid), s in graded["scores"].items() if who == student}
        expected = graded["points"] if student == "solution" else dict.fromkeys(graded["points"], 0.0)
        assert scores == expected, (student, graded["report"])


def test_does_the_learner_see_which_rule_refused_the_attempt(graded):
    why = "not available while grading" if graded["assignment"].startswith("08") else RULE
    for student in graded["attackers"]:
        assert why in _outputs(graded["autograded"][student]), (student, _outputs(graded["autograded"][student])[-2000:])
