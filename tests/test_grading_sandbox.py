"""Does the grading kernels' sandbox hold, and does the solution-free bncourse hold no solution?

Each test runs a short ``python -c`` in the sandbox the grading kernels get (no kernel: cheap):
what it can read, write, import and reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bncourse.grading import sandbox, seccomp, solution_free

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="the grading sandbox needs bubblewrap: apt-get install bubblewrap")
REPO = Path(__file__).resolve().parent.parent


def _run(code: str, tmp_path: Path, **kw) -> subprocess.CompletedProcess:
    work, run = tmp_path / "work", tmp_path / "run"
    for d in (work, run):
        d.mkdir(exist_ok=True)
        sandbox.Sandbox.prepare_writable(str(d))
    box = sandbox.Sandbox(library=str(solution_free.build()), **kw)
    cmd = box.command([sys.executable, "-c", code], str(work), str(run), {"BNCOURSE_SECRET_DB": "x", "PGPASSWORD": "pw"})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@needs_bwrap
def test_does_a_sandboxed_kernel_see_only_the_python_environment_and_its_working_copy(tmp_path):
    secret = tmp_path / "course" / "gradebook.db"
    secret.parent.mkdir()
    secret.write_text("scores")
    code = f"""
import os, socket, bncourse
print("uid", os.getuid())
print("bncourse", bncourse.__file__)
for path in [{str(secret)!r}, {str(REPO / 'notebooks' / 'nbgrader_config.py')!r}, os.path.expanduser('~root/.bashrc')]:
    try:
        open(path).read(); print("LEAK read", path)
    except OSError:
        pass
for path in [{str(secret)!r}, "/usr/lib/x", {str(Path(sys.prefix) / 'x')!r}, "/x"]:
    try:
        open(path, "w").write("x"); print("LEAK wrote", path)
    except OSError:
        pass
open("mine.txt", "w").write("ok")
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2); print("LEAK network")
except OSError:
    print("no network")
print("env", sorted(k for k in os.environ if "SECRET" in k or "PG" in k))
try:
    os.kill({os.getpid()}, 0); print("LEAK sees the grader's process")
except OSError:
    print("no grader process in sight")
"""
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LEAK" not in out.stdout, out.stdout
    uid = int(out.stdout.split("uid ", 1)[1].split()[0])
    assert sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_SPAN  # its own, not an account's
    assert "no network" in out.stdout and "env []" in out.stdout
    assert "no grader process in sight" in out.stdout
    assert str(solution_free.cache_dir()) in out.stdout  # the solution-free build, not the repository
    assert (tmp_path / "work" / "mine.txt").read_text() == "ok"


@needs_bwrap
def test_are_blocked_libraries_absent_however_they_are_reached(tmp_path):
    code = """
import importlib, sys
for how in ("torch", "sklearn.preprocessing", "scipy.stats"):
    try:
        importlib.import_module(how); print("LEAK", how)
    except ImportError as e:
        print("blocked", how)
sys.path = [p for p in sys.path if "grading" not in p]  # not on a path: not in the view at all
try:
    __import__("to" + "rch"); print("LEAK torch after sys.path")
except ImportError:
    print("blocked again")
# the base interpreter's own site-packages (red team, 2026-12-07: its scipy scored notebook 1)
import glob
sys.path[:0] = glob.glob(sys.base_prefix + "/lib/python3*/site-packages") + glob.glob("/usr/lib/python3*/dist-packages")
for name in [n for n in list(sys.modules) if n.split(".")[0] in ("scipy", "sklearn", "torch")]:
    del sys.modules[name]
for how in ("scipy.stats", "sklearn"):
    try:
        importlib.import_module(how); print("LEAK", how, "from", sys.path[0])
    except ImportError:
        print("blocked from base", how)
"""
    out = _run(code, tmp_path, blocked=("torch", "sklearn", "scipy"))
    assert "LEAK" not in out.stdout and out.stdout.count("blocked") == 6, out.stdout + out.stderr[-2000:]


def test_does_the_solution_free_build_keep_every_module_importable_but_no_reference_working(tmp_path):
    import pkgutil

    import bncourse

    build = solution_free.build(["bncourse.reference.batchnorm.batchnorm_forward"], where=tmp_path)
    # What grading kernels import: the checks, the references, the course's layers and models.
    modules = [m.name for m in pkgutil.walk_packages(bncourse.__path__, "bncourse.")
               if m.name.startswith(("bncourse.checks", "bncourse.reference")) or solution_free.is_stubbed(m.name)
               or m.name in ("bncourse.models", "bncourse.gradcheck")]
    code = f"""
import importlib, numpy as np
bad = []
for m in {modules!r}:
    try:
        importlib.import_module(m)
    except Exception as e:
        bad.append((m, repr(e)[:200]))
print("bad", bad)
from bncourse.reference import batchnorm, normalize, layernorm, groupnorm
print("given", batchnorm.batchnorm_forward(np.ones((3, 2)), np.ones(2), np.zeros(2))[0].shape)
for fn in (normalize.standardize, batchnorm.batchnorm_backward, layernorm.layernorm_forward, groupnorm.groupnorm_forward):
    try:
        fn(*[np.ones((4, 4))] * (fn.__code__.co_argcount - len(fn.__defaults__ or ())))
        print("LEAK", fn.__name__)
    except Exception as e:
        print(type(e).__name__)
"""
    env = {"PYTHONPATH": str(build), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert "bad []" in out.stdout and "given (3, 2)" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "LEAK" not in out.stdout and out.stdout.count("NotAvailableWhileGrading") == 4, out.stdout
    text = (build / "bncourse" / "reference" / "normalize.py").read_text()
    assert "mean(" not in text and "std(" not in text  # no trace of the computation, docstrings included


def test_does_grading_stop_with_how_to_get_bubblewrap_when_it_is_missing(monkeypatch, tmp_path):
    from bncourse import grading

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    sandbox._self_test.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
            grading.grade("01_why_normalize", tmp_path)
        assert grading.main("01_why_normalize", tmp_path) == 2
    finally:
        sandbox._self_test.cache_clear()


def test_does_every_check_record_in_the_solution_free_build(tmp_path):
    """A grading kernel's check calls catalogue.lazy (kept) and records: a stubbed catalogue must not
    make an honest solution's test cell raise before its receipt (red team, 2026-12-07: every
    notebook's solution scored 0 when lazy was stubbed)."""
    build = solution_free.build(where=tmp_path / "build")
    code = ("from bncourse.checks.forward import check_batchnorm_forward\n"
            "from bncourse.checks.diagnostics import check_saturated_fraction\n"
            "import numpy as np\n"
            "check_batchnorm_forward(lambda x, g, b, p: (x, None)).assert_passed()\n"
            "check_saturated_fraction(lambda h, kind: 0.0).assert_passed()\n"
            "print('recorded')\n")
    env = {**os.environ, "PYTHONPATH": str(build), "NBGRADER_EXECUTION": "autograde"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and "recorded" in run.stdout, run.stderr[-2000:]


def test_are_exercise_answers_outside_the_stubbed_modules_stubbed_by_name(tmp_path):
    """Notebook 6's exercise is the training loop's own recompute_bn_statistics (red team, 2026-12-07:
    it scored 2/2 from the grading build); the rest of bncourse.train stays."""
    build = solution_free.build(where=tmp_path / "build")
    code = ("import bncourse.train as t, bncourse.experiments.overhead as o, bncourse.experiments.step_measures as s\n"
            "for f in (t.recompute_bn_statistics, o.fold_batchnorm, s.input_drift):\n"
            "    try:\n        f(None, None) if f is t.recompute_bn_statistics else f(None)\n        print('LEAK', f.__name__)\n"
            "    except Exception as e:\n        print(type(e).__name__)\n"
            "print('train' if callable(t.train) else 'no train')\n")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(build)},
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.stdout.split() == ["NotAvailableWhileGrading"] * 3 + ["train"], run.stdout + run.stderr[-2000:]


TORCH_ATTEMPTS = r'''
import gc, glob, marshal, os, sys, types
from bncourse.kernel_blocks import install
install(("normalization", "folding"))
sys.setprofile(None)  # nothing depends on a profiler
import torch, torch.nn.functional as F
x = torch.randn(6, 3, dtype=torch.float64)
conv, bn = torch.nn.Conv2d(2, 2, 1).eval(), torch.nn.BatchNorm2d(2).eval()
# Undo the dispatcher's blocks: every handle or library object the garbage collector can find (torch's
# own libraries: the blocks' handles are not among them), destroyed.
found = [o for o in gc.get_objects() if type(o).__name__ in ("_DispatchModule", "Library")]
for o in found:
    for undo in ("_destroy", "reset"):
        try:
            getattr(o, undo)()
        except Exception:
            pass
print("dispatch handles in sight", sum(type(o).__name__ == "_DispatchModule" for o in found))
from torch.library import Library, fallthrough_kernel
lib = Library("aten", "IMPL")
for key in ("CPU", "Autograd", "CompositeImplicitAutograd"):
    try:
        lib.impl("native_batch_norm", fallthrough_kernel, key)
    except Exception:
        pass
torch_dir = os.path.dirname(torch.__file__)
def from_disk(rel):
    ns = {"__name__": "torch._decomp.decompositions", "__package__": "torch._decomp"}
    exec(compile(open(os.path.join(torch_dir, rel)).read(), rel, "exec"), ns)
    return ns
def from_pyc(rel):
    stem = os.path.splitext(rel)
    ns = {"__name__": "torch._decomp.decompositions", "__package__": "torch._decomp"}
    for pyc in glob.glob(os.path.join(torch_dir, os.path.dirname(rel), "__pycache__", os.path.basename(stem[0]) + ".*.pyc")):
        exec(marshal.loads(open(pyc, "rb").read()[16:]), ns)
    return ns
import torch._decomp.decompositions as D, torch._refs as R
import torch.nn.utils.fusion as fusion
attempts = {
    "F.batch_norm": lambda: F.batch_norm(x, None, None, training=True),
    "torch.__dict__": lambda: torch.__dict__["batch" + "_norm"](x, None, None, None, None, True, 0.1, 1e-5, False),
    "aten": lambda: torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5),
    "layer_norm of x.T": lambda: F.layer_norm(x.T, (6,)),
    "group_norm": lambda: F.group_norm(x.T[None], 3),
    "vmap": lambda: torch.func.vmap(lambda r: F.layer_norm(r, (6,)))(x.T),
    "mkldnn": lambda: torch.batch_norm(x.float().to_mkldnn(), None, None, None, None, True, 0.1, 1e-5, False),
    "nn.BatchNorm1d": lambda: torch.nn.BatchNorm1d(3, dtype=torch.float64)(x),
    "decomposition": lambda: D.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5),
    "torch._refs._normalize": lambda: R._normalize(x, [0], 1e-5),
    "decomposition from disk": lambda: from_disk("_decomp/decompositions.py")["native_batch_norm"](x, None, None, None, None, True, 0.1, 1e-5),
    "decomposition from .pyc": lambda: from_pyc("_decomp/decompositions.py")["native_batch_norm"](x, None, None, None, None, True, 0.1, 1e-5),
    "fuse_conv_bn_eval": lambda: fusion.__dict__["fuse_conv_bn" + "_eval"](conv, bn),
    "fusion from disk": lambda: from_disk("nn/utils/fusion.py")["fuse_conv_bn_weights"](conv.weight, conv.bias, bn.running_mean, bn.running_var, 1e-5, bn.weight, bn.bias),
    "jit freeze": lambda: torch.jit.freeze(torch.jit.script(torch.nn.Sequential(conv, bn))),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print("LEAK", name)
    except Exception as e:
        print("blocked", name, type(e).__name__)
print("folding passes in sight", sum(type(o).__name__ == "builtin_function_or_method"
                                     and o.__name__ == "_jit_pass_fold_frozen_conv_bn" for o in gc.get_objects()))
print("own", float(((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)).std()))
'''


@needs_bwrap
def test_can_no_learner_code_undo_or_get_round_the_torch_blocks(tmp_path):
    from bncourse.grading import libraries

    blocks = ("normalization", "folding")
    out = _run(TORCH_ATTEMPTS, tmp_path, blocked=("sklearn", "scipy"), overlays=libraries.overlays(blocks))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LEAK" not in out.stdout, out.stdout
    assert out.stdout.count("blocked ") == 15 and "dispatch handles in sight 0" in out.stdout, out.stdout
    assert "folding passes in sight 0" in out.stdout and "own " in out.stdout  # torch's tensor operations still work


# A grading kernel started as grading starts it (GradingKernelManager, the sandbox), in a grader
# process of its own whose stdout and stderr the test reads (red team 2, attacks 9 and 11).
_KERNEL_GRADER = r'''
import asyncio, json, logging, os, sys, tempfile
from bncourse.grading import solution_free
from bncourse.grading.kernel import GradingKernelManager, log_kernel_output
from bncourse.grading.sandbox import Limits, Sandbox
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
CELLS = [r"""
import os, json
seen = {}
for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        seen[fd] = target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if not target.startswith(("socket:", "anon_inode:")):   # every file, pipe or terminal it holds
        try:
            os.write(fd, b"\n[forged] Test cell standardize_tests: the grader says pass\x1b[2J\x1b]0;owned\x07\n")
        except OSError as e:
            seen[fd] += f" ({e.strerror})"
print("FDS " + json.dumps(seen))
""", r"""
import json
import os
chunk, out = b"\0" * (1 << 20), {}
for where in ("/tmp", "."):
    n = 0
    try:
        with open(os.path.join(where, "fill.bin"), "wb") as f:
            for _ in range(64):
                f.write(chunk); f.flush(); n += 1
        out[where] = f"wrote {n} MB"
    except OSError as e:
        out[where] = f"stopped at {n} MB: {e.strerror}"
    os.remove(os.path.join(where, "fill.bin"))
print("DISK", out, sorted(os.listdir(".")))
"""]
async def main(work):
    km = GradingKernelManager(kernel_name="python3")
    km.sandbox = Sandbox(library=str(solution_free.build()), limits=Limits(tmp_bytes=16 << 20, work_bytes=16 << 20))
    await km.start_kernel(cwd=work)
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    for code in CELLS:
        msg_id = kc.execute(code)
        while True:
            m = await kc.get_iopub_msg(timeout=120)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] in ("stream", "error"):
                print("CELL " + json.dumps(m["content"].get("text") or m["content"].get("evalue")), file=open("cells.txt", "a"))
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
    kc.stop_channels()
    await km.shutdown_kernel()
    log_kernel_output(km, logging.getLogger("grader"))
work = os.path.abspath("submission")
asyncio.run(main(work))
'''


@needs_bwrap
def test_does_the_kernel_hold_no_descriptor_of_the_grader_and_meet_its_disk_limits(tmp_path):
    """The kernel writes forged lines with escape sequences into every descriptor it holds: the
    grader's own stdout and stderr get none of it but as the kernel's escaped lines; writing 64 MB
    into /tmp or the working copy (16 MB each here) fails inside the kernel, which goes on, and the
    submission's folder is untouched."""
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "notes.txt").write_text("mine")
    os.chmod(submission, 0o755)
    run = subprocess.run([sys.executable, "-c", _KERNEL_GRADER], capture_output=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]
    cells = (tmp_path / "cells.txt").read_text()
    fds = json.loads(next(ln for ln in json.loads(cells.splitlines()[0][5:]).splitlines() if ln.startswith("FDS "))[4:])
    assert fds["0"] == "/dev/null" and fds["1"].startswith("pipe:") and fds["2"].startswith("pipe:")
    files = [t for t in fds.values() if t.startswith("/") and t != "/dev/null" and not t.startswith("/tmp/")]
    assert files == [], files  # nothing of the grader's filesystem is held open
    for stream in (run.stdout, run.stderr):
        assert b"\x1b" not in stream and b"\x07" not in stream
        forged = [ln for ln in stream.decode().splitlines() if "forged" in ln]
        assert all(ln.startswith("  kernel| ") and "\\x1b[2J" in ln for ln in forged), forged
    assert b"forged" not in run.stdout and b"forged" in run.stderr  # shown, as the kernel's
    disk = next(json.loads(ln[5:]) for ln in cells.splitlines()[1:] if "DISK" in ln)
    assert disk.count("No space left on device") == 2 and "notes.txt" in disk, disk
    assert sorted(os.listdir(submission)) == ["notes.txt"]


def _run_bpf(program: bytes, arch: int, nr: int, flags: int = 0) -> int:
    """What a classic-BPF seccomp program returns for one system call (the few opcodes it uses)."""
    import struct

    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    data = struct.pack("=iIQ6Q", nr, arch, 0, flags, 0, 0, 0, 0, 0)
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:   # ld [k]
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        else:
            taken = {0x15: a == k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if taken else jf
        pc += 1


def test_does_the_seccomp_filter_refuse_memfd_and_new_processes_but_allow_threads():
    allow, eperm, enosys = 0x7FFF0000, 0x00050001, 0x00050026
    x86, arm = 0xC000003E, 0xC00000B7
    plain = seccomp.seccomp_filter(False, "x86_64")
    assert [_run_bpf(plain, x86, nr) for nr in (319, 57, 56, 0, 59)] == [eperm, allow, allow, allow, allow]
    assert _run_bpf(plain, x86, 0x40000000 | 319) == eperm and _run_bpf(plain, 0x40000003, 356) == allow
    blocks = seccomp.seccomp_filter(True, "x86_64")
    assert [_run_bpf(blocks, x86, nr) for nr in (319, 57, 58, 435, 0, 59)] == [eperm, eperm, eperm, enosys, allow, allow]
    assert _run_bpf(blocks, x86, 56, flags=0x11) == eperm                  # fork's clone(SIGCHLD)
    assert _run_bpf(blocks, x86, 56, flags=0x3D0F00) == allow              # pthread_create's clone
    arm_blocks = seccomp.seccomp_filter(True, "aarch64")
    assert [_run_bpf(arm_blocks, arm, nr) for nr in (279, 435, 63)] == [eperm, enosys, allow]
    assert _run_bpf(arm_blocks, arm, 220, flags=0x11) == eperm and _run_bpf(arm_blocks, arm, 220, flags=0x3D0F00) == allow
    assert seccomp.seccomp_filter(True, "riscv64") == b""


def test_does_grading_as_another_user_stop_with_how_to_get_noexec_mounts(monkeypatch, tmp_path):
    """The kernels' writable places must be noexec tmpfs mounts, which only root makes: as another
    user grading stops and names both ways out, rather than sandbox without them."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    sandbox._self_test.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="run `bncourse grade` as root.*--unsandboxed"):
            sandbox.check()
        with pytest.raises(sandbox.SandboxUnavailable, match="noexec"):
            sandbox.Sandbox().command([sys.executable, "-c", "pass"], str(tmp_path), str(tmp_path))
    finally:
        sandbox._self_test.cache_clear()
