"""Is the catalogue the one place mistakes live, each with a stable id hints can be keyed by?"""

from __future__ import annotations

import re
import subprocess
import sys

from bncourse.checks import catalogue


def test_does_every_entry_carry_a_short_stable_id():
    for exercise in catalogue.exercises():
        for entry in catalogue.mistakes(exercise):
            assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.id) and len(entry.id) <= 60, (exercise, entry.id)


def test_does_a_mistake_shared_by_exercises_keep_one_id():
    seen: dict[str, set] = {}
    for exercise in catalogue.exercises():
        for entry in catalogue.mistakes(exercise):
            name = entry.name.lower()
            for words in ("eps outside the square root", "gamma and beta swapped", "unbiased variance used"):
                if name.startswith(words):
                    seen.setdefault(words, set()).add(entry.id)
    assert seen and all(len(ids) == 1 for ids in seen.values()), seen


def test_do_the_checks_import_and_make_their_cases_without_opening_the_catalogue():
    """The grading kernel's build replaces the catalogue by a stub: importing a check must not load it."""
    code = ("import sys\n"
            "from bncourse.checks import forward, norm_family, what_bn_does, figure1, normalize, backward\n"
            "cases = forward._forward_cases(True) + norm_family._gn_cases(False, True) + what_bn_does._noisy_cases(False)\n"
            "[c.make_args() for c in cases]\n"
            "print(sorted(m for m in sys.modules if m.startswith('bncourse.checks.catalogue.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_is_every_synchronized_batch_norm_entry_named_as_itself():
    """The sync entries are numpy simulations of every rank: cheap to check without process groups."""
    from bncourse.checks import sync_batchnorm as sb

    outputs = {"sync_batch_norm_forward": ("y", "running_mean", "running_var", "cache.x_hat", "cache.invstd",
                                           "cache.count"), "sync_batch_norm_backward": ("dx", "dweight", "dbias")}
    setups = {"sync_batch_norm_forward": (sb._reference_forward, sb._forward_cases(False)),
              "sync_batch_norm_backward": (sb._reference_backward, sb._backward_cases(False))}
    for exercise, (reference, cases) in setups.items():
        entries = catalogue.mistakes(exercise)
        for entry in entries:
            result = sb.check_function(exercise, entry.fn, reference, cases, entries, outputs=outputs[exercise],
                                       rtol=sb.RTOL, atol=sb.ATOL, forbid_torch="",
                                       explain_error=sb.explain_backward_shape)
            assert not result.passed and result.diagnosis.startswith(entry.name), (entry.name, result.diagnosis)
