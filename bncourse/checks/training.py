"""The training notebooks' checks under their former name: notebook 5's are in ``figure1``, notebook 6's
in ``recompute``. Kept so that ``from bncourse.checks.training import check_...`` goes on working."""

from bncourse.checks.figure1 import check_sigmoid_input_percentiles  # noqa: F401
from bncourse.checks.recompute import check_recompute_bn_statistics  # noqa: F401
