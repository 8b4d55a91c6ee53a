"""Notebook 8 through nbgrader: a worker process that crashes costs only the exercise it ran in."""

from __future__ import annotations

import pytest

from test_roundtrip import generate, nbgrader, notebooks_of, replace_solution, scores, submit

pytestmark = pytest.mark.slow

ASSIGNMENT = "08_batchnorm_across_devices"

CRASHING_FORWARD = '''
def sync_batch_norm_forward(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Kills its own worker process on rank 1, as a segfault in an extension would."""
    if dist.get_rank() == 1:
        os._exit(1)
    raise RuntimeError("unreachable on rank 1")
'''


def test_does_a_crashing_worker_cost_only_its_exercise(course_copy):
    generate(course_copy, ASSIGNMENT)
    (name, solution), = notebooks_of(course_copy / "source" / ASSIGNMENT).items()
    submit(course_copy, "crash", ASSIGNMENT, {name: replace_solution(solution, "sync-forward", CRASHING_FORWARD)})
    nbgrader(course_copy, "autograde", ASSIGNMENT, "--force")
    score, max_score = scores(course_copy, ASSIGNMENT)["crash"]
    assert (score, max_score) == (4.0, 8.0), "the backward exercise should keep its 4 points, the forward lose its 4"
