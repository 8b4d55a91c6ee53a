"""Does any graded exercise keep a working reference in the grading build its notebook is graded with?

Red team, 2026-12-07: notebook 6's reference (``bncourse.train.recompute_bn_statistics``) was real in
the grading build and a learner reached it by ``__dict__``; notebook 10's check reference folded with
torch's own helper, notebook 5's was ``bncourse.plots.percentile_bands``. This test walks the hints
registry (every graded exercise), so a new exercise or a new path to an old answer is caught here.

For each exercise, in the build made for its notebook (the instructor's given names kept, as
``GradingExecute`` builds it), ``tests/no_reference_probe.py``:
- calls every reference its check hands to ``check_function``: each must raise;
- looks up every ``bncourse`` function the reference runs in the full package, and every function or
  class of the exercise's own name: each must be a stub, absent, or a named helper that computes no
  answer (``HELPERS``: case builders, models, data), or a name the notebook's instructor hands out;
- tries every module-level function of the build (private helpers too) as the answer: none may
  return the reference's output on the check's first cases. Red team 2 (2026-12-07) answered
  notebook 11's ``saturated_fraction`` with ``bncourse.diagnostics._saturated``, a helper kept real
  because the notebook hands out ``Diagnostics``; no name list had it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat

from bncourse.grading import solution_free
from bncourse.hints.texts import EXERCISES

REPO = Path(__file__).resolve().parents[1]

# Functions a reference runs that compute no exercise's answer: each builds a case's inputs, a model
# or data, or checks an argument. Add a name here only after reading it.
HELPERS = re.compile("|".join([
    r"bncourse\.(models|data|device|runtime|run_size)\..*",
    r"bncourse\.train\.(History|TrainConfig)",
    r"bncourse\.reference\.batchnorm\._(check_\w+|float_array|per_feature|to_rows|from_rows)",
    r"bncourse\.reference\.groupnorm\._check_groups",
    r"bncourse\.checks\.recompute\._(bn_layers|build|momenta|weights)",
    r"bncourse\.checks\.sync_batchnorm\._(batch|slices|sums_of)",
    r"bncourse\.checks\.norm_family\._(affine|rows|images|ln_inputs|gn_inputs)",
    r"bncourse\.checks\.catalogue\.shared\.Slip",  # a mistake's id, name and hint (strings), no code
    r"bncourse\.checks\.folding\._(build_pair|build_model|snapshot|eval_out|seeded_model)",
    # which Conv/Linear layers run, their weights as one array (no fold)
    r"bncourse\.checks\.layers_that_run\.(is_batchnorm|to_array|layers_that_run|fingerprint|weight_and_bias)",
    r"bncourse\.checks\.folding\.caller_changes",
    r"bncourse\.checks\.what_bn_does\._as_float_arrays",
    r"bncourse\.checks\.forward\._x",
    r"bncourse\.checks\.pytorch\._fn_case",
    r"bncourse\.checks\.torch_guard\.(quiet|to_numpy)",
]))

# References that are another library's implementation: notebook 4's modules are judged against
# torch's own nn.BatchNorm1d/2d. Whether a kernel may reach torch's batch norm is the library rule's
# business (bncourse.grading.libraries, docs/instructors.md), not the build's.
LIBRARY_REFERENCES = {"batchnorm1d_module", "batchnorm2d"}
# Exercises whose reference output the function-by-function trial must be able to read: for each,
# the full package's own reference is found by it (so an empty list of answers means something).
TRIED_AS_FUNCTIONS = {"standardize", "min_max_scale", "batchnorm_forward", "update_running_stats",
                      "batchnorm_inference", "batchnorm_backward", "spatial_batchnorm_forward",
                      "layernorm_forward", "groupnorm_forward", "input_drift", "gradient_change",
                      "saturated_fraction", "update_to_data_ratio", "fig1-percentiles", "sync-forward",
                      "fold_batchnorm"}
# A reference that is a constant, not an answer: "torch.autograd.gradcheck passed".
CONSTANT_REFERENCES = {"BatchNormFunction (gradcheck)"}


def _given(assignment: str) -> frozenset[str]:
    """What the instructor's own cells import from stubbed modules (kept real in that build)."""
    sources = []
    for path in sorted((REPO / "notebooks" / "source" / assignment).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        sources += [c.source for c in nb.cells if c.cell_type == "code"
                    and not c.metadata.get("nbgrader", {}).get("solution", False)]
    return solution_free.given_names(sources)


def test_does_no_graded_exercise_keep_a_working_reference_in_its_grading_build(tmp_path):
    builds: dict[str, list[str]] = {}
    given_of: dict[str, frozenset[str]] = {}
    for ex in EXERCISES.values():
        given = _given(ex.notebook)
        build = str(solution_free.build(given))  # the cache grading itself uses
        builds.setdefault(build, []).append(ex.id)
        given_of[ex.id] = given
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"full": str(REPO), "builds": builds,
                               "untraced": sorted(LIBRARY_REFERENCES | CONSTANT_REFERENCES)}))
    run = subprocess.run([sys.executable, str(REPO / "tests" / "no_reference_probe.py"), str(job)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])

    assert set(found["references"]) == set(EXERCISES)
    missing = [eid for eid, refs in found["references"].items() if not refs]
    assert not missing, f"no reference captured for {missing}: the probe no longer sees the check's reference"
    working = {eid: [n for n, _, outcome in refs
                     if outcome != "NotAvailableWhileGrading" and n not in CONSTANT_REFERENCES]
               for eid, refs in found["references"].items() if eid not in LIBRARY_REFERENCES}
    assert not any(working.values()), f"a check's reference works in the grading build: {working}"

    raising = {dotted for refs in found["references"].values() for _, dotted, outcome in refs
               if outcome == "NotAvailableWhileGrading"}  # a check's own wrapper, shown above to raise
    real = {eid: [name for name, state in reached.items() if state == "real" and not HELPERS.fullmatch(name)
                  and name not in given_of[eid] and name not in raising]
            for eid, reached in found["reached"].items() if eid not in LIBRARY_REFERENCES}
    assert not any(real.values()), f"what a reference runs is real in the grading build: {real}"
    # the probe did look: the attack's target is among what notebook 6's reference runs, stubbed
    assert found["reached"]["cnn-recompute"]["bncourse.train.recompute_bn_statistics"] == "stub"

    # every importable function of each build, tried as each of its exercises' answer
    assert TRIED_AS_FUNCTIONS <= set(found["self_found"]), TRIED_AS_FUNCTIONS - set(found["self_found"])
    assert all(found["tried"][eid] > 300 for eid in TRIED_AS_FUNCTIONS), found["tried"]
    # red team 2's N7: a table of known mistakes (working numpy in Mistake entries) is real code too
    assert any(".figure1.MISTAKES[" in n for n in found["tables"]["full"]), found["tables"]["full"][:5]
    held = {build: names for build, names in found["tables"].items() if build != "full" and names}
    assert not held, f"a stubbed module's table holds working code in the grading build: {held}"
    # red team 2's N2: a course module that is batch norm for some setting (BatchRenorm(C, r_max=1, d_max=0))
    assert "bncourse.renorm.BatchRenorm" in found["batchnorm_modules"]["full"]
    renamed = {build: names for build, names in found["batchnorm_modules"].items() if build != "full" and names}
    assert not renamed, f"a course module is batch norm under another name in the grading build: {renamed}"

    answered = {eid: names for eid, names in found["answers"].items() if names}
    assert not answered, f"a function of the grading build answers a graded exercise: {answered}"
