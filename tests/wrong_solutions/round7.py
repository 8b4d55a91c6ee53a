"""Wrong solutions a seventh held-out round found unnamed (and their neighbours), by notebook (``WRONG_BY_NB``):
each as a learner writes it. Notebook 4's are in ``round7_torch``."""

import numpy as np

from bncourse.reference import batchnorm as ref


# ------------------------------------------------------------------------------ notebook 2


def fwd_gamma_before_normalizing(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    return (gamma * x - mu) / np.sqrt(var + eps) + beta, None


def fwd_gamma_and_beta_before_subtracting(x, gamma, beta, eps=1e-5):
    mu, std = x.mean(0), np.sqrt(x.var(0) + eps)
    return (x * gamma + beta - mu) / std, None


def fwd_scaled_then_standardized(x, gamma, beta, eps=1e-5):
    y = gamma * x
    return (y - y.mean(0)) / np.sqrt(y.var(0) + eps) + beta, None


def running_not_decayed(x, running_mean, running_var, momentum=0.1):
    return running_mean + momentum * x.mean(0), running_var + momentum * x.var(0, ddof=1)


def running_old_times_momentum(x, running_mean, running_var, momentum=0.1):
    new_mean = running_mean * momentum + x.mean(axis=0)
    new_var = running_var * momentum + x.var(axis=0, ddof=1)
    return new_mean, new_var


def running_only_batch_weighted(x, running_mean, running_var, momentum=0.1):
    return momentum * x.mean(0), momentum * x.var(0, ddof=1)


WRONG_BY_NB = {"2-3": [
    ("batchnorm_forward", ["gamma is applied before normalizing"], fwd_gamma_before_normalizing),
    ("batchnorm_forward", ["before normalizing"], fwd_gamma_and_beta_before_subtracting),
    ("batchnorm_forward", ["before normalizing"], fwd_scaled_then_standardized),
    ("update_running_stats", ["not decayed"], running_not_decayed),
    ("update_running_stats", ["not decayed"], running_old_times_momentum),
    ("update_running_stats", ["not decayed"], running_only_batch_weighted),
]}
