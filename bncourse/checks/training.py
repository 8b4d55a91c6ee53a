"""Checks for the training notebooks: Figure 1's percentiles and re-estimating BN statistics.

- ``check_sigmoid_input_percentiles(fn)``: ``fn(records) -> bands``, records (T, N) numpy array
  (T snapshots of one sigmoid's input on N fixed examples), bands (T, 3): the 15th, 50th and 85th
  percentiles of each snapshot (notebook "Reproducing Ioffe & Szegedy, Figure 1").
- ``check_recompute_bn_statistics(fn)``: ``fn(model, batches)`` re-estimates every batch-norm
  layer's running mean and variance from ``batches`` (input tensors) as an equal-weight average,
  leaving the weights and the model's mode as they were (notebook "CNNs on the GPU").

``hidden=True`` runs other seeds, shapes and models for nbgrader's hidden tests. The references
are the package's own ``bncourse.plots.percentile_bands`` and
``bncourse.train.recompute_bn_statistics``.
"""

from __future__ import annotations

import copy

import numpy as np

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, check_function, compare_arrays, safe_call
from bncourse.plots import percentile_bands

# ---------------------------------------------------------------------------------------------
# Figure 1: percentiles of a sigmoid's input over training
# ---------------------------------------------------------------------------------------------


_ROWWISE_HINT = ("row t of records is one snapshot of the N examples: take the percentiles of each row, "
                 "over axis=1, then transpose: np.percentile(records, [15, 50, 85], axis=1).T")


def _records(seed: int, T: int, N: int):
    """Skewed, drifting snapshots: like a sigmoid input whose distribution moves during training."""
    def make():
        rng = np.random.default_rng(seed)
        drift = np.linspace(0.0, 2.0, T)[:, None]
        return (rng.gamma(2.0, 1.0, size=(T, N)) * (1 + drift) - drift * 3,)

    return make


def _reference_percentiles(records):
    return percentile_bands(np.asarray(records))


def _percentile_mistakes() -> list[Mistake]:
    return [
        Mistake("fractions instead of percentiles",
                "np.percentile takes numbers from 0 to 100 (15, 50, 85); np.quantile takes 0.15, 0.5, 0.85",
                lambda r: np.percentile(r, [0.15, 0.5, 0.85], axis=1).T),
        Mistake("mean and standard deviation instead of percentiles",
                "the paper plots percentiles, which do not assume a symmetric distribution: use np.percentile",
                lambda r: np.stack([r.mean(1) - r.std(1), r.mean(1), r.mean(1) + r.std(1)], axis=1)),
        Mistake("mean instead of median for the middle line",
                "the middle line is the 50th percentile (the median), not the mean",
                lambda r: np.stack([np.percentile(r, 15, axis=1), r.mean(1), np.percentile(r, 85, axis=1)], axis=1)),
        Mistake("percentiles in the wrong order",
                "return the columns in the order 15th, 50th, 85th",
                lambda r: np.percentile(r, [85, 50, 15], axis=1).T),
        Mistake("percentiles not transposed",
                "np.percentile(records, [15, 50, 85], axis=1) has shape (3, T), one row per percentile: "
                "transpose it (.T) to get one row per snapshot, shape (T, 3)",
                lambda r: np.percentile(r, [15, 50, 85], axis=1)),
        Mistake("percentiles over the wrong axis (axis=0, across snapshots)",
                _ROWWISE_HINT,
                lambda r: np.percentile(r, [15, 50, 85], axis=0).T),
        Mistake("percentiles over the wrong axis (axis=0), not transposed",
                _ROWWISE_HINT,
                lambda r: np.percentile(r, [15, 50, 85], axis=0)),
        Mistake("percentiles of all snapshots together",
                "each row t is the percentiles of records[t] alone: reduce over axis=1",
                lambda r: np.repeat(np.percentile(r, [15, 50, 85])[None, :], len(r), axis=0)),
    ]


def check_sigmoid_input_percentiles(fn, hidden: bool = False) -> CheckResult:
    """Check ``fn(records (T, N)) -> (T, 3)`` 15th/50th/85th percentiles per row."""
    cases = (
        [Case("T=4, N=50", _records(11, 4, 50)), Case("T=1, N=7", _records(12, 1, 7)),
         Case("T=30, N=500", _records(13, 30, 500))]
        if hidden else
        [Case("T=3, N=20", _records(0, 3, 20)), Case("T=10, N=100", _records(1, 10, 100)),
         Case("T=2, N=5", _records(2, 2, 5))]
    )
    return check_function("sigmoid_input_percentiles", fn, _reference_percentiles, cases, _percentile_mistakes(),
                          outputs=("bands",), rtol=1e-6, atol=1e-8, check_dtype=False)


# ---------------------------------------------------------------------------------------------
# Re-estimating batch-norm statistics
# ---------------------------------------------------------------------------------------------


def _bn_layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _state(model) -> dict:
    """Buffers, parameters, momenta and mode of a model, as numpy arrays to compare."""
    out = {}
    for i, m in enumerate(_bn_layers(model)):
        out[f"layer {i} running_mean"] = m.running_mean.detach().cpu().double().numpy()
        out[f"layer {i} running_var"] = m.running_var.detach().cpu().double().numpy()
    return out


def _make_case(seed: int, kind: str, start_training: bool, n_batches: int, momentum: float = 0.1):
    """(model with stale statistics, list of input batches) for a case."""
    def make():
        import torch

        from bncourse.models import BNPaperMLP, SmallCNN

        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        if kind == "cnn":
            model = SmallCNN(1, 4, widths=(4, 6))
            batches = [torch.randn(8, 1, 8, 8, generator=g) * 2 + 1 for _ in range(n_batches)]
        else:
            model = BNPaperMLP(12, 3, batch_norm=True, hidden=5, depth=2)
            batches = [torch.randn(6, 12, generator=g) * 3 - 1 for _ in range(n_batches)]
        for m in _bn_layers(model):  # stale statistics, as after training on other data
            m.running_mean.uniform_(5, 6, generator=g)
            m.running_var.uniform_(7, 9, generator=g)
            m.num_batches_tracked.fill_(100)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.5, 0.5, generator=g)
            m.momentum = momentum
        model.train(start_training)
        return model, batches

    return make


def _run_reference(model, batches):
    from bncourse.train import recompute_bn_statistics

    recompute_bn_statistics(model, batches)


def _buggy_no_reset(model, batches):
    import torch

    layers = _bn_layers(model)
    was = model.training
    for m in layers:
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m in layers:
        m.momentum = 0.1
    model.train(was)


def _buggy_default_momentum(model, batches):
    import torch

    was = model.training
    for m in _bn_layers(model):
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.train(was)


def _buggy_eval_mode(model, batches):
    import torch

    model.eval()
    with torch.no_grad():
        for x in batches:
            model(x)


def _buggy_only_last_batch(model, batches):
    import torch

    was = model.training
    for m in _bn_layers(model):
        m.reset_running_stats()
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m in _bn_layers(model):
        m.momentum = 0.1
    model.train(was)


def _buggy_neither_reset_nor_cumulative(model, batches):
    import torch

    was = model.training
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.train(was)


_BN_MISTAKES = [
    ("statistics not reset first",
     "call reset_running_stats() on each batch-norm layer before the passes, or the stale values stay in the average",
     _buggy_no_reset),
    ("exponential average (momentum left as it was)",
     "set each layer's momentum to None during the passes (cumulative average: every batch weighs the same)",
     _buggy_default_momentum),
    ("only the last batch counted",
     "momentum=1 keeps only the last batch: use momentum=None for an equal-weight average over all batches",
     _buggy_only_last_batch),
    ("the passes ran in eval mode",
     "running statistics are only updated in training mode: call model.train() before the passes",
     _buggy_eval_mode),
    ("neither reset nor an equal-weight average",
     "the passes only nudged the stale statistics (momentum 0.1): call reset_running_stats() on each "
     "batch-norm layer, and set its momentum to None during the passes so every batch weighs the same",
     _buggy_neither_reset_nor_cumulative),
]


def _run_on_copy(fn, make):
    model, batches = make()
    call = safe_call(fn, (model, batches))
    return model, call


def check_recompute_bn_statistics(fn, hidden: bool = False, rtol: float = 1e-4, atol: float = 1e-5) -> CheckResult:
    """Check ``fn(model, batches)``: equal-weight running statistics, weights, momenta and mode kept."""
    import torch

    cases = (
        [Case("MLP with BatchNorm1d, 5 batches, starts in train mode", _make_case(21, "mlp", True, 5)),
         Case("CNN with BatchNorm2d, 2 batches, starts in eval mode", _make_case(22, "cnn", False, 2)),
         Case("CNN, 1 batch, starts in train mode", _make_case(23, "cnn", True, 1))]
        if hidden else
        [Case("CNN with BatchNorm2d, 3 batches, starts in eval mode", _make_case(1, "cnn", False, 3)),
         Case("MLP with BatchNorm1d, 4 batches, starts in train mode, momentum 0.2",
              _make_case(2, "mlp", True, 4, momentum=0.2))]
    )
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    if not callable(fn):
        return CheckResult("recompute_bn_statistics",
                           [CaseResult("setup", False, f"expected a function, got {type(fn).__name__}")],
                           diagnosis="pass the function itself (no parentheses after its name)", tolerance=tolerance)
    results, failed, structural = [], [], []
    for case in cases:
        before_model, _ = case.make_args()
        was_training = before_model.training
        momenta = [m.momentum for m in _bn_layers(before_model)]
        params = {k: v.detach().clone() for k, v in before_model.state_dict().items() if "running" not in k
                  and "num_batches" not in k}
        model, call = _run_on_copy(fn, case.make_args)
        if call.error:
            structural.append("not attempted yet: the function still raises NotImplementedError"
                              if "NotImplementedError" in call.error else f"the function raised {call.error.split(' (at')[0]}")
            results.append(CaseResult(case.name, False, f"raised {call.error}"))
            continue
        ref_model, _ = case.make_args()
        _run_reference(ref_model, case.make_args()[1])
        got, expected = _state(model), _state(ref_model)
        problems = [p for k in expected if (p := compare_arrays(k, got[k], expected[k], rtol, atol, check_dtype=False))]
        if problems:
            failed.append((case, got))
        if model.training != was_training:
            msg = f"the model was left in {'training' if model.training else 'eval'} mode; restore the mode it had"
            problems.append(msg)
            structural.append(msg)
        if [m.momentum for m in _bn_layers(model)] != momenta:
            msg = "the layers' momentum was not restored afterwards"
            problems.append(msg)
            structural.append(msg)
        changed = [k for k, v in model.state_dict().items() if k in params and not torch.equal(v, params[k])]
        if changed:
            msg = f"weights changed ({changed[0]}): only the running statistics may change (no optimizer step)"
            problems.append(msg)
            structural.append(msg)
        results.append(CaseResult(case.name, not problems, "; ".join(problems[:2])))

    diagnosis = ""
    if not all(r.passed for r in results):
        for name, hint, buggy in _BN_MISTAKES:
            if failed and all(
                not any(compare_arrays(k, got[k], v, rtol * 10, atol * 10, check_dtype=False)
                        for k, v in _state(_run_on_copy(buggy, case.make_args)[0]).items())
                for case, got in failed
            ):
                diagnosis = f"{name}: {hint}"
                break
        unique = list(dict.fromkeys(structural))
        diagnosis = diagnosis or ("; and ".join(unique[:2]) if unique else
                                  "the running statistics differ from the equal-weight average over the batches")
    return CheckResult("recompute_bn_statistics", results, diagnosis=diagnosis, tolerance=tolerance)
