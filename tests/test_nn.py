"""Do the course's torch batch-norm layers (bncourse.nn) behave exactly like PyTorch's, in float64?

PyTorch is the oracle: F.batch_norm / nn.BatchNorm1d / nn.BatchNorm2d on the same seeded inputs,
over several training steps and then in eval mode, outputs, gradients and buffers alike.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.nn import BatchNorm1dNumpy, BatchNorm2d, BatchNormFunction

F64 = torch.float64


def _inputs(seed, shape, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.rand(c, generator=g, dtype=F64) * 3 + 0.1
    shift = torch.randn(c, generator=g, dtype=F64) * 5
    x = torch.randn(shape, generator=g, dtype=F64) * scale.view(view) + shift.view(view)
    return x.to(dtype), torch.randn(shape, generator=g, dtype=F64).to(dtype)


def _close(a, b, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("seed, n, d", [(0, 2, 1), (1, 8, 3), (2, 64, 17)])
def test_does_the_function_match_F_batch_norm_and_its_gradients(seed, n, d):
    x, dout = _inputs(seed, (n, d))
    gamma = torch.randn(d, dtype=F64, generator=torch.Generator().manual_seed(seed + 100))
    beta = torch.randn(d, dtype=F64, generator=torch.Generator().manual_seed(seed + 200))
    mine = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    theirs = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    out = BatchNormFunction.apply(*mine, 1e-5)
    expected = F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], training=True, eps=1e-5)
    _close(out, expected)
    out.backward(dout)
    expected.backward(dout)
    for a, b in zip(mine, theirs):
        _close(a.grad, b.grad)


def test_does_the_function_pass_gradcheck_in_float64():
    x, _ = _inputs(3, (5, 4))
    gamma = torch.linspace(-2, 2, 4, dtype=F64).requires_grad_()
    beta = torch.linspace(1, -1, 4, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(BatchNormFunction.apply, (x.requires_grad_(), gamma, beta, 1e-3))


def test_does_the_function_keep_float32_in_float32_out():
    x, dout = _inputs(4, (6, 3), torch.float32)
    x.requires_grad_()
    gamma = torch.ones(3, requires_grad=True)
    beta = torch.zeros(3, requires_grad=True)
    out = BatchNormFunction.apply(x, gamma, beta, 1e-5)
    out.backward(dout)
    assert out.dtype == x.grad.dtype == gamma.grad.dtype == torch.float32
    _close(out, F.batch_norm(x.detach(), None, None, training=True), rtol=1e-5, atol=1e-5)


def _run_side_by_side(mine: nn.Module, theirs: nn.Module, shapes, seed=0, rtol=1e-10, atol=1e-12):
    """Train both on the same batches (random weight and bias), then eval; assert equal at every step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.rand(mine.num_features, generator=g, dtype=F64) + 0.5
        b = torch.randn(mine.num_features, generator=g, dtype=F64)
        for m in (mine, theirs):
            if m.weight is not None:
                m.weight.copy_(w)
                m.bias.copy_(b)
    for step, shape in enumerate(shapes):
        x, dout = _inputs(seed * 10 + step, shape)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        oa, ob = mine(xa), theirs(xb)
        _close(oa, ob, rtol, atol)
        oa.backward(dout)
        ob.backward(dout)
        _close(xa.grad, xb.grad, rtol, atol)
        if mine.weight is not None:
            _close(mine.weight.grad, theirs.weight.grad, rtol, atol)
            _close(mine.bias.grad, theirs.bias.grad, rtol, atol)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            _close(getattr(mine, name), getattr(theirs, name), rtol, atol)
    mine.eval()
    theirs.eval()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    x, dout = _inputs(seed + 999, shapes[0])
    _close(mine(x), theirs(x), rtol, atol)
    for k, v in mine.state_dict().items():
        assert torch.equal(v, before[k]), f"eval mode changed {k}"


@pytest.mark.parametrize("shapes", [[(8, 3)] * 4, [(2, 5), (7, 5), (3, 5)]])
def test_does_BatchNorm1dNumpy_follow_nn_BatchNorm1d_over_steps_and_in_eval(shapes):
    d = shapes[0][1]
    _run_side_by_side(BatchNorm1dNumpy(d, dtype=F64), nn.BatchNorm1d(d, dtype=F64), shapes)


@pytest.mark.parametrize(
    "kwargs, shapes",
    [
        ({}, [(4, 3, 5, 6)] * 4),
        ({"eps": 1e-3, "momentum": 0.3}, [(2, 4, 3, 3), (5, 4, 1, 2), (3, 4, 2, 2)]),
        ({"momentum": None}, [(3, 2, 4, 4)] * 3),  # cumulative average
        ({"affine": False}, [(2, 3, 2, 2)] * 2),
    ],
)
def test_does_BatchNorm2d_follow_nn_BatchNorm2d_over_steps_and_in_eval(kwargs, shapes):
    c = shapes[0][1]
    _run_side_by_side(BatchNorm2d(c, dtype=F64, **kwargs), nn.BatchNorm2d(c, dtype=F64, **kwargs), shapes, seed=1)


def test_can_BatchNorm2d_load_nn_BatchNorm2d_state_dict_and_back():
    theirs = nn.BatchNorm2d(3)
    theirs(torch.randn(4, 3, 2, 2))
    mine = BatchNorm2d(3)
    mine.load_state_dict(theirs.state_dict())  # strict: the same keys
    assert set(mine.state_dict()) == set(theirs.state_dict())
    assert set(dict(mine.named_buffers())) == {"running_mean", "running_var", "num_batches_tracked"}
    nn.BatchNorm2d(3).load_state_dict(mine.state_dict())


def test_does_BatchNorm2d_keep_half_precision_inputs_in_their_dtype():
    x = torch.randn(4, 2, 3, 3).to(torch.bfloat16)
    out = BatchNorm2d(2)(x)
    assert out.dtype == torch.bfloat16
    _close(out.float(), nn.BatchNorm2d(2)(x.float()), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bad, message", [((2, 3, 4), "expected 4D input"), ((2, 5, 3, 3), "3 channels"),
                                          ((1, 3, 1, 1), "more than 1 value per channel")])
def test_does_BatchNorm2d_say_what_arrived_when_the_input_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm2d(3)(torch.randn(bad))


def test_does_BatchNorm1dNumpy_reject_images():
    with pytest.raises(ValueError, match="expected 2D input"):
        BatchNorm1dNumpy(3)(torch.randn(2, 3, 4, 4))


def test_does_BatchNorm2d_follow_the_module_to_float64():
    m = BatchNorm2d(3).to(F64)
    assert all(t.dtype == F64 for t in (m.weight, m.bias, m.running_mean, m.running_var))
    assert m(torch.randn(2, 3, 2, 2, dtype=F64)).dtype == F64
    assert m.num_batches_tracked.dtype == torch.long and int(m.num_batches_tracked) == 1


# ---------------------------------------------------------------------------------------------
# Under autocast (the GPU fast path, simulated with CPU autocast): statistics in float32
# ---------------------------------------------------------------------------------------------


def _cpu_autocast_dtypes():
    """bf16, and fp16 where this torch's CPU autocast runs a convolution in it."""
    dtypes = [torch.bfloat16]
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            if nn.Conv2d(1, 1, 1)(torch.ones(1, 1, 1, 1)).dtype == torch.float16:
                dtypes.append(torch.float16)
    except (RuntimeError, AssertionError):
        pass
    return dtypes


def autocast_side_by_side(mine: nn.Module, theirs: nn.Module, dtype, image: bool = True, steps: int = 3,
                          device="cpu"):
    """Train ``mine`` and ``theirs`` on a conv's (or linear's) autocast output; compare outputs and statistics.

    The activations have a mean of about 4 and a std of about 1 per channel over 4096 values: a
    mean rounded to bf16 (8 bits of mantissa) is then off by up to 0.016, and a running mean by a
    tenth of that after one step, far outside float32's rounding. On the CPU (CPU autocast) unless
    ``device`` names a GPU (``benchmarks/gpu_check.py`` runs that version).
    """
    device = torch.device(device)
    torch.manual_seed(0)
    layer = (nn.Conv2d(3, 6, 3, padding=1) if image else nn.Linear(12, 6)).to(device)
    mine, theirs = mine.to(device), theirs.to(device)
    for step in range(steps):
        x = (torch.randn(16, 3, 16, 16) if image else torch.randn(4096, 12)).to(device)
        with torch.autocast(device.type, dtype=dtype):
            h = layer(x)
            h = h + 4.0 + 0.5 * torch.arange(6, dtype=h.dtype, device=device).view((1, -1, 1, 1) if image else (1, -1))
            assert h.dtype == dtype  # what a GPU's fast path feeds the layer
            out_mine, out_theirs = mine(h), theirs(h)
        assert out_mine.dtype == out_theirs.dtype == dtype, f"step {step}: output dtype {out_mine.dtype}"
        torch.testing.assert_close(out_mine.float(), out_theirs.float(), rtol=0, atol=0.04)
        for name in ("running_mean", "running_var"):
            a, b = getattr(mine, name), getattr(theirs, name)
            assert a.dtype == torch.float32, f"{name} became {a.dtype}"
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"step {step}, {name}: {m}")
    mine.eval(), theirs.eval()
    with torch.autocast(device.type, dtype=dtype):
        x = (torch.randn(16, 3, 16, 16) if image else torch.randn(64, 12)).to(device)
        h = layer(x) + 4.0
        torch.testing.assert_close(mine(h).float(), theirs(h).float(), rtol=0, atol=0.04)


@pytest.mark.parametrize("dtype", _cpu_autocast_dtypes())
def test_does_BatchNorm2d_keep_its_statistics_in_float32_under_autocast(dtype):
    autocast_side_by_side(BatchNorm2d(6), nn.BatchNorm2d(6), dtype)


@pytest.mark.parametrize("dtype", _cpu_autocast_dtypes())
def test_does_BatchNorm1dNumpy_keep_its_statistics_in_float32_under_autocast(dtype):
    autocast_side_by_side(BatchNorm1dNumpy(6), nn.BatchNorm1d(6), dtype, image=False, steps=2)


def _notebook_solution(notebook: str, cell_id: str, namespace: dict) -> dict:
    """Run the instructor notebook's solution cell ``cell_id`` in ``namespace``; return the namespace."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / "source" / notebook
    cells = {c.get("id"): c for c in json.loads(path.read_text())["cells"]}
    exec("".join(cells[cell_id]["source"]), namespace)  # noqa: S102 - the course's own solution
    return namespace


@pytest.mark.parametrize("dtype", _cpu_autocast_dtypes())
def test_does_notebook_4s_solution_BatchNorm2d_keep_its_statistics_in_float32_under_autocast(dtype):
    ns = _notebook_solution("04_batchnorm_pytorch/batchnorm_pytorch.ipynb", "batchnorm2d", {"torch": torch, "nn": nn})
    autocast_side_by_side(ns["BatchNorm2d"](6), nn.BatchNorm2d(6), dtype)
