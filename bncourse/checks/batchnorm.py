"""The numpy batch-norm checks under their former name: notebook 2's are in ``forward``, notebook 3's
in ``backward``. Kept so that ``from bncourse.checks.batchnorm import check_...`` goes on working."""

from bncourse.checks.backward import (  # noqa: F401
    check_batchnorm_backward, check_batchnorm_backward_staged, check_gradients_numerically,
    check_spatial_batchnorm_backward, check_spatial_batchnorm_forward)
from bncourse.checks.forward import (  # noqa: F401
    check_batchnorm_forward, check_batchnorm_inference, check_update_running_stats)
