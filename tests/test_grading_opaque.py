"""Does the per-cell source report name native code: ctypes, libtorch's private bindings, Static Runtime?

Red team 2 (2026-12-07): N1 called libtorch's exported batch-norm kernels (``at::native::batch_norm_cpu_out``)
through ctypes with tensors' ``_cdata`` addresses, N3 ran the C++ ``FoldFrozenConvBatchnorm`` pass on a
``torch._C._freeze_module`` graph, and a probe reached batch norm through ``torch._C._jit_to_static_module``.
No sandbox rule can take a symbol out of a loaded libtorch: these are reported to the instructor, named,
per cell (``bncourse.grading.opaque``), never prevented (docs/instructors.md, section 1b).
"""

from __future__ import annotations

import pytest

from bncourse.grading.opaque import opaque_code

CTYPES_KERNEL = '''import ctypes as _ct, os as _os

lib = _ct.CDLL(_os.path.join(_os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
fwd = lib._ZN2at6native18batch_norm_cpu_outERKNS_6TensorERKSt8optionalIS1_ES7_S7_S7_bddRS1_S8_S8_

def address(t, keep):
    b = (_ct.c_void_p * 1)(t._cdata); keep.append(b); return _ct.addressof(b)
'''
CTYPES_HIDDEN = '''m = __builtins__["__import__"]("ct" + "ypes")  # imported by a computed name
so = getattr(m, "CD" + "LL")(None)
'''
FOLD_PASS = '''from torch import _C

def fold_batchnorm(layer, bn):
    frozen = _C._freeze_module(torch.jit.script(nn.Sequential(layer, bn).eval())._c)
    return frozen
'''
STATIC_RUNTIME = '''def forward(self, x):
    sm = torch._C._jit_to_static_module(self.scripted.graph)
    return sm(x)
'''
HONEST = '''def fold_batchnorm(layer, bn):
    std = torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter((layer.weight * (bn.weight / std).view(-1, 1, 1, 1)).detach())
    return new
'''


@pytest.mark.parametrize("source, named", [
    (CTYPES_KERNEL, ["import ctypes", ".CDLL (native code)", "._cdata (native code)",
                     "libtorch_cpu.so", "._ZN2at6native18batch_norm_cpu_out"]),
    (CTYPES_HIDDEN, ["the name '__import__' as a string"]),
    (FOLD_PASS, ["torch._C (libtorch's private bindings)", "._freeze_module (native code)"]),
    (STATIC_RUNTIME, ["torch._C._jit_to_static_module (libtorch's private bindings)"]),
])
def test_does_the_report_name_native_code_in_a_cell(source, named):
    found = opaque_code(source)
    for name in named:
        assert any(name in f for f in found), (name, found)


def test_is_an_honest_torch_cell_not_flagged():
    assert opaque_code(HONEST) == []
