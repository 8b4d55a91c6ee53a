"""How many of notebooks 2-4's catalogue entries their own checks reject and name as themselves.

    python -m tests.wrong_solutions.catalogue_measure [--hidden]     (from the repository's root)

Each entry's own wrong implementation (a wrong module for notebook 4) is handed in as the learner's;
"named" means the diagnosis starts with the entry's name. Prints one line per entry that is not
named and the rates per notebook: the before/after figure when the catalogue is reorganized.
"""

from __future__ import annotations

import sys


def runs(hidden: bool):
    """(notebook, exercise, entry name, the check's result) for every entry of notebooks 2-4."""
    from bncourse.checks import backward, catalogue, forward, pytorch
    from bncourse.checks.catalogue import pytorch as module_catalogue

    by_check = [("2", "batchnorm_forward", forward.check_batchnorm_forward),
                ("2", "update_running_stats", forward.check_update_running_stats),
                ("2", "batchnorm_inference", forward.check_batchnorm_inference),
                ("3", "batchnorm_backward", backward.check_batchnorm_backward),
                ("3", "spatial_batchnorm_forward", backward.check_spatial_batchnorm_forward)]
    for nb, exercise, check in by_check:
        for m in catalogue.mistakes(exercise):
            yield nb, exercise, m.name, check(m.fn, hidden=hidden)
    for spatial, exercise in ((False, "BatchNorm1dNumpy"), (True, "BatchNorm2d")):
        for m in module_catalogue.module_mistakes(spatial):
            result = (pytorch.check_batchnorm2d(m.cls, hidden=hidden, device="cpu") if spatial
                      else pytorch.check_batchnorm1d_module(m.cls, hidden=hidden))
            yield "4", exercise, m.name, result


def main(argv=()) -> int:
    totals: dict[str, list[int]] = {}
    for nb, exercise, name, result in runs("--hidden" in argv):
        ok = not result.passed and (result.diagnosis or "").startswith(name)
        t = totals.setdefault(nb, [0, 0, 0])
        t[0] += 1
        t[1] += not result.passed
        t[2] += ok
        if not ok:
            print(f"nb{nb} {'passed' if result.passed else 'OTHER '} {exercise:26} {name[:40]:40} {(result.diagnosis or '')[:80]}")
    for nb, (n, rejected, good) in totals.items():
        print(f"notebook {nb}: {n} catalogue entries, {rejected} rejected, {good} named as themselves ({100 * good / n:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
