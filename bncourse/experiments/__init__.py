"""The course's experiments: claims about batch norm put to multi-seed runs with computed verdicts.

``harness`` runs a trial over seeds and arms and decides a verdict with a rule fixed before the run.
"""

from bncourse.experiments.harness import (  # noqa: F401
    CENSORED, CONTRADICTED, DEMONSTRATION, EXPERIMENT, HELD, INCONCLUSIVE, INVALID, UNTESTED, VERDICTS, AtLeast, AtMost,
    Better, Differs, ExperimentResult, MustLearn, Outcome, Rule, Similar, Summary, combine, default_seeds, run_experiment)
