"""The course's experiments: claims about batch norm put to multi-seed runs with computed verdicts.

``harness`` runs a trial over seeds and arms and decides a verdict with a rule fixed before the run.
"""

from bncourse.experiments.experiment_result import ExperimentResult  # noqa: F401
from bncourse.experiments.harness import default_seeds, run_experiment  # noqa: F401
from bncourse.experiments.rules import AtLeast, AtMost, Better, Differs, MustLearn, Outcome, Rule, Similar  # noqa: F401
from bncourse.experiments.seed_summary import Summary  # noqa: F401
from bncourse.experiments.verdicts import (  # noqa: F401
    CENSORED, CONTRADICTED, DEMONSTRATION, EXPERIMENT, HELD, INCONCLUSIVE, INVALID, UNTESTED, VERDICTS, combine)
