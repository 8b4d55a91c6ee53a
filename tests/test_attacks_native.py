"""Can a graded kernel run native code of its choosing, and so call torch's own C++ kernels past every block?

Red team 2's last winning class (N1, N3): torch's CPU batch-norm kernels and its C++ folding pass,
called through ctypes, which no in-process block can stop. The sandbox's answer
(``bncourse.grading.sandbox``): no foreign-function interface (``_ctypes``, ``_cffi_backend``
masked by an empty file, a ``ctypes`` stand-in that only loads the environment's own libraries),
no code mapped from a writable place (the kernel's /tmp, its working copy and its IPC folder are
noexec mounts), no file in memory (``memfd_create`` fails: seccomp). A compiler is in the view
(/usr/bin/gcc): what it builds cannot be loaded, which is what ``torch.utils.cpp_extension.load_inline``
would have to do.

``test_can_no_sandboxed_process_load_or_call_native_code_of_its_own`` tries every route in one
short ``python -c`` in notebook 4's sandbox (cheap). Notebook 4 is graded once with four students:
the instructor's solution, the red team's ctypes attack (N1), a student who ships a compiled
extension module (it calls ``at::native::batch_norm_cpu_out``; outside the sandbox it computes
torch's batch norm exactly) beside the notebook and, for the other exercise, loads it from memory,
and a student whose modules hand each batch to a fresh ``python -c`` (a new process has none of the
kernel's dispatcher blocks: in notebooks 4 and 10 the kernel can start no process, seccomp).
Each attack earns what a blank submission earns (0), the solution full marks.
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from attack_course import attack_course, generated, submit

pytestmark = pytest.mark.slow

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install bubblewrap", allow_module_level=True)
needs_compiler = pytest.mark.skipif(shutil.which("gcc") is None, reason="the native attacks are built with gcc")

# A CPython extension module that calls torch's own batch-norm kernel (the symbol red team 2's N1 calls).
NATIVE_C = r'''
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdbool.h>
typedef void *(*fwd_t)(void *, void *, void *, void *, void *, void *, bool, double, double, void *, void *, void *);
static PyObject *forward(PyObject *self, PyObject *args) {
    unsigned long long x, w, b, rm, rv, out, sm, sv; int train; double mom, eps;
    if (!PyArg_ParseTuple(args, "KKKKKpddKKK", &x, &w, &b, &rm, &rv, &train, &mom, &eps, &out, &sm, &sv)) return NULL;
    void *lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    fwd_t f = (fwd_t)dlsym(lib ? lib : RTLD_DEFAULT,
                           "_ZN2at6native18batch_norm_cpu_outERKNS_6TensorERKSt8optionalIS1_ES7_S7_S7_bddRS1_S8_S8_");
    if (!f) { PyErr_SetString(PyExc_RuntimeError, "batch_norm_cpu_out not found"); return NULL; }
    void *tx = (void *)x, *tout = (void *)out, *tsm = (void *)sm, *tsv = (void *)sv;
    uint64_t ow[2] = {w, w != 0}, ob[2] = {b, b != 0}, orm[2] = {rm, rm != 0}, orv[2] = {rv, rv != 0};
    void *sret[3] = {0, 0, 0};
    f(sret, &tx, ow, ob, orm, orv, train, mom, eps, &tout, &tsm, &tsv);
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"forward", forward, METH_VARARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "bnnative", NULL, -1, methods};
PyMODINIT_FUNC PyInit_bnnative(void) { return PyModule_Create(&mod); }
'''


@pytest.fixture(scope="module")
def native_so(tmp_path_factory) -> bytes:
    """The compiled ``bnnative`` extension module (built outside the sandbox, as a student would at home)."""
    if shutil.which("gcc") is None:
        pytest.skip("the native attacks are built with gcc")
    where = tmp_path_factory.mktemp("native")
    (where / "bnnative.c").write_text(NATIVE_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}", "bnnative.c",
                    "-o", "bnnative.so"], cwd=where, check=True, capture_output=True)
    return (where / "bnnative.so").read_bytes()


# ---------------------------------------------------------------------------------------------
# Every route to native code, in one sandboxed process
# ---------------------------------------------------------------------------------------------

PROBE = r'''
import base64, glob, importlib.machinery, importlib.util, os, shutil, subprocess, sys
import torch
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "LEAK"
    except BaseException as e:
        results[name] = f"blocked ({type(e).__name__}: {str(e)[:120]})"
def load(path, name="bnnative"):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m
libtorch = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
SYMBOL = "_ZN2at6native18batch_norm_cpu_outERKNS_6TensorERKSt8optionalIS1_ES7_S7_S7_bddRS1_S8_S8_"
def ctypes_call():
    import ctypes
    ctypes.CDLL(libtorch)[SYMBOL](0)
attempt("ctypes", ctypes_call)
def stdlib_ctypes():
    for path in glob.glob(sys.base_prefix + "/lib/python3*/ctypes/__init__.py") + glob.glob("/usr/lib/python3*/ctypes/__init__.py"):
        sys.modules.pop("_ctypes", None)
        spec = importlib.util.spec_from_file_location("real_ctypes", path, submodule_search_locations=[os.path.dirname(path)])
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        m.CDLL(libtorch)
attempt("the standard library's ctypes, from its file", stdlib_ctypes)
def raw_ctypes():
    paths = []
    for root in {sys.base_prefix, sys.prefix, "/usr", "/usr/local"}:
        paths += glob.glob(root + "/lib*/python3*/lib-dynload/_ctypes.*so") + glob.glob(root + "/lib*/python3*/*-packages/_cffi_backend*.so")
    assert paths, "no FFI module found to try"
    ok = []
    for path in paths:
        name = os.path.basename(path).split(".")[0]
        try:
            importlib.machinery.ExtensionFileLoader(name, path).create_module(importlib.machinery.ModuleSpec(name, None, origin=path))
            ok.append(path)
        except ImportError:
            pass
    assert ok, "every FFI module refused"
attempt("_ctypes / _cffi_backend by their files", raw_ctypes)
def cffi_call():
    import cffi
    cffi.FFI().dlopen(libtorch)
attempt("cffi", cffi_call)
attempt("torch.ops.load_library of the working copy's .so", lambda: torch.ops.load_library(os.path.abspath("bnnative.so")))
attempt(".so in the working copy", lambda: load("bnnative.so"))
def from_tmp():
    shutil.copy("bnnative.so", "/tmp/bnnative.so")
    load("/tmp/bnnative.so")
attempt(".so copied to /tmp", from_tmp)
def from_ipc():
    shutil.copy("bnnative.so", os.path.join(IPC, "bnnative.so"))
    load(os.path.join(IPC, "bnnative.so"))
attempt(".so copied to the IPC folder", from_ipc)
def from_memfd():
    fd = os.memfd_create("bnnative")
    os.write(fd, open("bnnative.so", "rb").read())
    load(f"/proc/self/fd/{fd}")
attempt(".so from memfd_create", from_memfd)
def from_shm():
    shutil.copy("bnnative.so", "/dev/shm/bnnative.so")
    load("/dev/shm/bnnative.so")
attempt(".so in /dev/shm", from_shm)
def compiled_here():
    open("/tmp/own.c", "w").write("int answer(void) { return 42; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "/tmp/own.c", "-o", "/tmp/own.so"], check=True, capture_output=True)
    results["compiler"] = "gcc built /tmp/own.so" if os.path.exists("/tmp/own.so") else "no output"
    torch.ops.load_library("/tmp/own.so")
attempt("a library built by the compiler in the view (what load_inline does), loaded", compiled_here)
def exec_copy():
    shutil.copy(sys.executable, "/tmp/python")
    os.chmod("/tmp/python", 0o755)
    subprocess.run(["/tmp/python", "-c", "pass"], check=True)
attempt("a program copied to /tmp, run", exec_copy)
# What must still work: torch's own libraries through the stand-in (torchvision's operators)
import torchvision
results["control: torchvision's operators"] = str(torch.ops.torchvision.nms)
results["control: batch norm"] = float(torch.nn.functional.batch_norm(torch.randn(5, 2), None, None, training=True).abs().sum() > 0)
for k, v in results.items():
    print(f"{k} => {v}")
'''


@needs_compiler
def test_can_no_sandboxed_process_load_or_call_native_code_of_its_own(native_so, tmp_path):
    from bncourse.grading import libraries, sandbox, solution_free

    work, run = tmp_path / "work", tmp_path / "run"
    for d in (work, run):
        d.mkdir()
    (work / "bnnative.so").write_bytes(native_so)
    for d in (work, run):
        sandbox.Sandbox.prepare_writable(str(d))
    # notebook 4's overlays; torchvision in the view (the control: its operators load through the
    # stand-in); the dispatcher block needs a kernel (it is the graded class's below)
    options = {**libraries.sandbox_options("04_batchnorm_pytorch"), "blocked": ("sklearn", "scipy"), "torch_blocks": (),
               "processes": True}  # the compiler runs (its output is what is tested): see test_attacks_processes.py
    box = sandbox.Sandbox(library=str(solution_free.build()), **options)
    # the working copy as grading makes it: a tmpfs filled from a private copy of the submission
    staged = tmp_path / "staged"
    shutil.copytree(work, staged)
    sandbox.Sandbox.prepare_writable(str(staged))
    code = f"IPC = {str(run)!r}\n" + PROBE
    out = subprocess.run(box.command([sys.executable, "-c", code], str(work), str(run), work_source=str(staged)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = dict(line.split(" => ", 1) for line in out.stdout.splitlines() if " => " in line)
    attempts = {k: v for k, v in lines.items() if not k.startswith(("control", "compiler"))}
    assert len(attempts) == 12 and all(v.startswith("blocked") for v in attempts.values()), out.stdout
    assert "Operation not permitted" in lines[".so from memfd_create"], lines  # seccomp, not a missing file
    assert "failed to map segment" in lines[".so copied to /tmp"], lines       # noexec, not a missing file
    assert "failed to map segment" in lines[".so in the working copy"], lines
    assert lines.get("compiler") == "gcc built /tmp/own.so", lines            # a compiler is reachable, its output inert
    assert lines["control: torchvision's operators"] == "torchvision.nms" and lines["control: batch norm"] == "1.0"


# ---------------------------------------------------------------------------------------------
# Notebook 4, graded: the red team's ctypes attack and a shipped extension module
# ---------------------------------------------------------------------------------------------

# Red team 2's N1 (redteam2_attacks/nb4_ctypes.py): torch's at::native kernels through ctypes, with
# at::Tensor references built from tensor._cdata; forward, backward and the running statistics.
_CTYPES_LIB = '''import ctypes as _ct, os as _os


class _TorchBN:
    P = _ct.c_void_p

    def __init__(self):
        lib = _ct.CDLL(_os.path.join(_os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        P = self.P
        self.fwd = lib._ZN2at6native18batch_norm_cpu_outERKNS_6TensorERKSt8optionalIS1_ES7_S7_S7_bddRS1_S8_S8_
        self.fwd.argtypes = [P] * 6 + [_ct.c_bool, _ct.c_double, _ct.c_double] + [P] * 3
        self.fwd.restype = P
        self.bwd = lib._ZN2at6native23batch_norm_backward_cpuERKNS_6TensorES3_RKSt8optionalIS1_ES7_S7_S7_S7_bdSt5arrayIbLm3EE
        self.bwd.argtypes = [P] * 8 + [_ct.c_bool, _ct.c_double, _ct.c_uint32]
        self.bwd.restype = P
        self.copy = lib._ZN2at6native5copy_ERNS_6TensorERKS1_b
        self.copy.argtypes = [P, P, _ct.c_bool]
        self.copy.restype = P

    def _t(self, t, keep):
        b = (_ct.c_void_p * 1)(t._cdata); keep.append(b); return _ct.addressof(b)

    def _o(self, t, keep):
        b = (_ct.c_uint64 * 2)(0 if t is None else t._cdata, 0 if t is None else 1); keep.append(b)
        return _ct.addressof(b)

    def forward(self, x, w, b, rm, rv, train, momentum, eps):
        keep = []
        out, sm, sv = torch.empty_like(x), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
        sret = (_ct.c_void_p * 3)()
        self.fwd(_ct.addressof(sret), self._t(x, keep), self._o(w, keep), self._o(b, keep), self._o(rm, keep),
                 self._o(rv, keep), train, momentum, eps, self._t(out, keep), self._t(sm, keep), self._t(sv, keep))
        return out, sm, sv

    def backward(self, g, x, w, rm, rv, sm, sv, train, eps):
        keep = []
        gi, gw, gb = torch.empty_like(x), torch.empty_like(w), torch.empty_like(w)
        sret = (_ct.c_void_p * 3)()
        self.bwd(_ct.addressof(sret), self._t(g, keep), self._t(x, keep), self._o(w, keep), self._o(rm, keep),
                 self._o(rv, keep), self._o(sm, keep), self._o(sv, keep), train, eps, 0x010101)
        for dest, i in ((gi, 2), (gw, 1), (gb, 0)):
            self.copy(self._t(dest, keep), _ct.addressof(sret) + 8 * i, False)
        return gi, gw, gb


_bn = _TorchBN()


class _Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, rm, rv, train, momentum, eps):
        x = x.contiguous()
        out, sm, sv = _bn.forward(x, w.detach(), b.detach(), rm, rv, train, momentum, eps)
        ctx.save_for_backward(x, w, sm, sv)
        ctx.more = (rm, rv, train, eps)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, sm, sv = ctx.saved_tensors
        rm, rv, train, eps = ctx.more
        gi, gw, gb = _bn.backward(g.contiguous(), x, w.detach(), rm, rv, sm, sv, train, eps)
        return gi, gw, gb, None, None, None, None, None
'''
# The shipped extension module: its forward is torch's kernel; the backward by hand (dx of batch norm).
_NATIVE_LIB = '''import importlib.util as _iu, os as _os


def _load(path):
    spec = _iu.spec_from_file_location("bnnative", path)
    module = _iu.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


{load}


class _Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, rm, rv, train, momentum, eps):
        x = x.contiguous()
        out, sm, sv = torch.empty_like(x), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
        _native.forward(x._cdata, w.detach()._cdata, b.detach()._cdata, rm._cdata, rv._cdata, bool(train), momentum,
                        eps, out._cdata, sm._cdata, sv._cdata)
        ctx.save_for_backward(x, w, sm, sv)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, mean, invstd = ctx.saved_tensors
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        gb, gw = g.sum(dims), (g * xhat).sum(dims)
        n = x.numel() // x.shape[1]
        gx = (w * invstd).view(shape) / n * (n * g - gb.view(shape) - xhat * gw.view(shape))
        return gx, gw, gb, None, None, None, None, None
'''
_MODULE = '''

class NAME(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.num_batches_tracked += 1
        return _Fn.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                         self.momentum, self.eps)
'''
# torch's batch norm computed by a fresh Python: it starts without the kernel's dispatcher blocks.
_CHILD = ("import io, sys, torch\n"
          "x, w, b, rm, rv, t, m, e = torch.load(io.BytesIO(sys.stdin.buffer.read()))\n"
          "out = torch.nn.functional.batch_norm(x, rm, rv, w, b, t, m, e)\n"
          "buf = io.BytesIO(); torch.save((out, rm, rv), buf); sys.stdout.buffer.write(buf.getvalue())\n")
_SUBPROCESS_MODULE = f'''
import io, subprocess, sys


class NAME(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        buf = io.BytesIO()
        torch.save((x.detach(), self.weight.detach(), self.bias.detach(), self.running_mean.clone(),
                    self.running_var.clone(), self.training, self.momentum, self.eps), buf)
        run = subprocess.run([sys.executable, "-c", {_CHILD!r}], input=buf.getvalue(), capture_output=True, check=True)
        out, rm, rv = torch.load(io.BytesIO(run.stdout))
        with torch.no_grad():
            self.running_mean.copy_(rm), self.running_var.copy_(rv)
        return out
'''
POINTS = {"batchnorm_function": 3, "batchnorm1d_module": 3, "batchnorm2d": 4}


def _attackers(native: bytes) -> dict[str, dict[str, str]]:
    beside = _NATIVE_LIB.format(load='_native = _load("bnnative.so")  # shipped beside the notebook')
    in_memory = _NATIVE_LIB.format(load=(
        "_fd = _os.memfd_create('bnnative')\n"
        f"_os.write(_fd, __import__('base64').b64decode({base64.b64encode(native).decode()!r}))\n"
        "_native = _load(f'/proc/self/fd/{_fd}')"))
    return {"ctypes_n1": {"batchnorm1d_module": _CTYPES_LIB + _MODULE.replace("NAME", "BatchNorm1dNumpy"),
                          "batchnorm2d": _CTYPES_LIB + _MODULE.replace("NAME", "BatchNorm2d")},
            "native_so": {"batchnorm1d_module": in_memory + _MODULE.replace("NAME", "BatchNorm1dNumpy"),
                          "batchnorm2d": beside + _MODULE.replace("NAME", "BatchNorm2d")},
            "subprocess": {"batchnorm1d_module": _SUBPROCESS_MODULE.replace("NAME", "BatchNorm1dNumpy"),
                           "batchnorm2d": _SUBPROCESS_MODULE.replace("NAME", "BatchNorm2d")}}


def _set(nb, grade_id: str, source: str) -> None:
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return
    raise KeyError(grade_id)


@pytest.fixture(scope="module")
def graded(tmp_path_factory, native_so):
    from nbgrader.api import Gradebook

    from bncourse import grading
    from bncourse.grading import db_url_of

    assignment, notebook = "04_batchnorm_pytorch", "batchnorm_pytorch"
    with attack_course(tmp_path_factory.mktemp("native-attacks"), cell_timeout=120) as (course, api):
        source_nb, release_nb = generated(course, api, assignment, notebook)
        submit(course, "solution", assignment, notebook, source_nb)
        for student, cells in _attackers(native_so).items():
            nb = nbformat.reads(nbformat.writes(release_nb), as_version=4)
            for grade_id, source in cells.items():
                _set(nb, grade_id, source)
            path = submit(course, student, assignment, notebook, nb)
            (path.parent / "bnnative.so").write_bytes(native_so)
        report = grading.grade(assignment, course, jobs=2)
        with Gradebook(db_url_of(course)) as gb:
            scores = {(sub.student.id, g.name): g.score for sub in gb.assignment_submissions(assignment)
                      for nb in sub.notebooks for g in nb.grades}
        yield {"course": course, "scores": scores, "report": report, "assignment": assignment, "notebook": notebook}


@needs_compiler
@pytest.mark.parametrize("student", ["solution", "ctypes_n1", "native_so", "subprocess"])
def test_does_native_code_earn_what_a_blank_submission_earns_and_the_solution_full_marks(graded, student):
    scores = {gid: s for (who, gid), s in graded["scores"].items() if who == student}
    expected = {f"{e}_tests": float(p) if student == "solution" else 0.0 for e, p in POINTS.items()}
    assert scores == expected, graded["report"]


def _outputs(cell) -> str:
    return "".join(str(o.get("text", "")) + str(o.get("ename", "")) + ": " + str(o.get("evalue", ""))
                   for o in cell.get("outputs", []))


@needs_compiler
@pytest.mark.parametrize("student,grade_id,why", [
    ("ctypes_n1", "batchnorm2d_tests", "foreign-function interface"),  # the ctypes stand-in, at first use
    # a .so shipped beside the notebook is not in the release, so never in the kernel's working copy
    # (which is noexec as well: the in-sandbox probe above loads one there and fails to map it)
    ("native_so", "batchnorm2d", "cannot open shared object file"),
    ("native_so", "batchnorm1d_module", "Operation not permitted"),    # memfd_create is denied
    ("subprocess", "batchnorm2d_tests", "Operation not permitted"),    # a kernel with blocks starts no process
])
def test_is_each_native_route_refused_by_the_sandbox_itself(graded, student, grade_id, why):
    nb = nbformat.read(graded["course"] / "autograded" / student / graded["assignment"] / f"{graded['notebook']}.ipynb", 4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    assert why in _outputs(cell), _outputs(cell)[-2000:]
