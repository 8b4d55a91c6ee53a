"""How many learner-style wrong solutions of notebooks 2-4 and 7-10 the checks reject, and how many they name.

    python -m tests.wrong_solutions.measure [--no-sync]      (from the repository's root)

Prints one line per solution and the rates per notebook. "Named" means the diagnosis contains one
of the phrases the solution lists for its mistake. Right variants must pass.
"""

from __future__ import annotations

import sys


def check(exercise: str, fn):
    from bncourse.checks import backward, folding, forward, norm_family, pytorch, sync_batchnorm, what_bn_does

    checks = {
        "batchnorm_forward": forward.check_batchnorm_forward, "update_running_stats": forward.check_update_running_stats,
        "batchnorm_inference": forward.check_batchnorm_inference, "batchnorm_backward": backward.check_batchnorm_backward,
        "batchnorm_backward_staged": backward.check_batchnorm_backward_staged,
        "spatial_batchnorm_forward": backward.check_spatial_batchnorm_forward,
        "spatial_batchnorm_backward": backward.check_spatial_batchnorm_backward,
        "input_drift": what_bn_does.check_input_drift, "gradient_change": what_bn_does.check_gradient_change,
        "noisy_batchnorm_forward": what_bn_does.check_noisy_batchnorm_forward,
        "sync_batch_norm_forward": sync_batchnorm.check_sync_batchnorm_forward,
        "sync_batch_norm_backward": sync_batchnorm.check_sync_batchnorm_backward,
        "layernorm_forward": norm_family.check_layernorm_forward,
        "layernorm_backward": norm_family.check_layernorm_backward,
        "groupnorm_forward": norm_family.check_groupnorm_forward,
        "groupnorm_backward": norm_family.check_groupnorm_backward,
        "BatchNorm2d": lambda cls: pytorch.check_batchnorm2d(cls, device="cpu"),
        "BatchNorm1dNumpy": pytorch.check_batchnorm1d_module, "BatchNormFunction": pytorch.check_batchnorm_function,
        "fold_batchnorm": folding.check_fold_batchnorm, "fold_model": folding.check_fold_model,
    }
    return checks[exercise](*fn) if isinstance(fn, tuple) else checks[exercise](fn)


def corpus(sync: bool = True):
    from . import nb02_03, nb04, nb07, nb09, nb10

    modules = [("2-3", nb02_03), ("4", nb04), ("7", nb07), ("9", nb09), ("10", nb10)]
    if sync:
        from . import nb08
        modules.insert(2, ("8", nb08))
    return modules


def named(result, words) -> bool:
    text = (result.diagnosis or "").lower()
    return any(w.lower() in text for w in words)


def main(argv=()) -> int:
    totals = {}
    refused = []
    for nb, module in corpus(sync="--no-sync" not in argv):
        n = rejected = good = 0
        for exercise, words, fn in module.WRONG:
            result = check(exercise, fn)
            n += 1
            rejected += not result.passed
            ok = not result.passed and named(result, words)
            good += ok
            name = (fn[1] if isinstance(fn, tuple) else fn).__name__
            print(f"nb{nb:>2} {'named ' if ok else 'passed' if result.passed else 'OTHER '} {exercise:26} {name:28} "
                  f"{(result.diagnosis or '')[:90]}")
        for exercise, fn in module.RIGHT:
            result = check(exercise, fn)
            if not result.passed:
                refused.append(f"nb{nb} {exercise}: {result.message[:160]}")
        totals[nb] = (n, rejected, good)
    print()
    for nb, (n, rejected, good) in totals.items():
        print(f"notebook {nb}: {n} wrong solutions, {rejected} rejected, {good} named ({100 * good / n:.0f}%)")
    n, rejected, good = (sum(t[i] for t in totals.values()) for i in range(3))
    print(f"all: {n} wrong solutions, {rejected} rejected, {good} named ({100 * good / n:.0f}%)")
    print(f"right variants refused: {len(refused)}")
    for line in refused:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
