"""Wrong (and right) solutions of notebook 7, written as learners write them.

Each wrong one is ``(exercise, words, fn)``: ``words`` are phrases one of which the check's
diagnosis must contain for the mistake to count as named.
"""

import numpy as np

# ------------------------------------------------------------------------------ input_drift


def drift_axis1(hb, ha):
    dm = np.abs(ha.mean(axis=1) - hb.mean(axis=1))
    ds = np.abs(ha.std(axis=1) - hb.std(axis=1))
    return (dm.mean() + ds.mean()) / hb.std(axis=1).mean()


def drift_pooled(hb, ha):
    return (abs(ha.mean() - hb.mean()) + abs(ha.std() - hb.std())) / hb.std()


def drift_signed(hb, ha):
    dm = ha.mean(0) - hb.mean(0)
    ds = ha.std(0) - hb.std(0)
    return (dm.mean() + ds.mean()) / hb.std(0).mean()


def drift_absolute(hb, ha):
    return np.abs(ha.mean(0) - hb.mean(0)).mean() + np.abs(ha.std(0) - hb.std(0)).mean()


def drift_ddof1(hb, ha):
    dm = np.abs(ha.mean(0) - hb.mean(0))
    ds = np.abs(ha.std(0, ddof=1) - hb.std(0, ddof=1))
    return (dm.mean() + ds.mean()) / hb.std(0, ddof=1).mean()


def drift_variance(hb, ha):
    dm = np.abs(ha.mean(0) - hb.mean(0))
    ds = np.abs(ha.var(0) - hb.var(0))
    return (dm.mean() + ds.mean()) / hb.var(0).mean()


def drift_means_only(hb, ha):
    return np.abs(ha.mean(0) - hb.mean(0)).mean() / hb.std(0).mean()


def drift_after(hb, ha):
    dm = np.abs(ha.mean(0) - hb.mean(0))
    ds = np.abs(ha.std(0) - hb.std(0))
    return (dm.mean() + ds.mean()) / ha.std(0).mean()


def drift_elementwise(hb, ha):
    return np.mean(np.abs(ha - hb)) / hb.std(0).mean()


def drift_per_unit_ratio(hb, ha):
    """Relative per unit, then averaged (not pooled relative to the mean spread)."""
    s = hb.std(0)
    return np.mean((np.abs(ha.mean(0) - hb.mean(0)) + np.abs(ha.std(0) - s)) / s)


def drift_good_einsum(hb, ha):
    n = hb.shape[0]
    mb, ma = np.einsum("nd->d", hb) / n, np.einsum("nd->d", ha) / n
    sb = np.sqrt(np.einsum("nd,nd->d", hb - mb, hb - mb) / n)
    sa = np.sqrt(np.einsum("nd,nd->d", ha - ma, ha - ma) / n)
    return float((np.abs(ma - mb).mean() + np.abs(sa - sb).mean()) / sb.mean())


def drift_good_transposed(hb, ha):
    """Right: units as rows (D, N), statistics over axis 1."""
    b, a = hb.T, ha.T
    return (np.abs(a.mean(1) - b.mean(1)).mean() + np.abs(a.std(1) - b.std(1)).mean()) / b.std(1).mean()


# ------------------------------------------------------------------------------ gradient_change


def _n(a):
    return np.sqrt(np.sum(a * a))


def grad_dot(gb, ga):
    return _n(ga - gb) / _n(gb), np.sum(gb * ga)


def grad_rows(gb, ga):
    rel = np.linalg.norm(ga - gb, axis=1) / np.linalg.norm(gb, axis=1)
    cos = np.sum(gb * ga, axis=1) / (np.linalg.norm(gb, axis=1) * np.linalg.norm(ga, axis=1))
    return rel.mean(), cos.mean()


def grad_spectral(gb, ga):
    return (np.linalg.norm(ga - gb, 2) / np.linalg.norm(gb, 2),
            np.sum(gb * ga) / (np.linalg.norm(gb, 2) * np.linalg.norm(ga, 2)))


def grad_rel_after(gb, ga):
    return _n(ga - gb) / _n(ga), np.sum(gb * ga) / (_n(gb) * _n(ga))


def grad_absolute(gb, ga):
    return _n(ga - gb), np.sum(gb * ga) / (_n(gb) * _n(ga))


def grad_norm_diff(gb, ga):
    return (_n(ga) - _n(gb)) / _n(gb), np.sum(gb * ga) / (_n(gb) * _n(ga))


def grad_squared(gb, ga):
    return np.sum((ga - gb) ** 2) / np.sum(gb ** 2), np.sum(gb * ga) / (_n(gb) * _n(ga))


def grad_order(gb, ga):
    return np.sum(gb * ga) / (_n(gb) * _n(ga)), _n(ga - gb) / _n(gb)


def grad_angle(gb, ga):
    cos = np.sum(gb * ga) / (_n(gb) * _n(ga))
    return _n(ga - gb) / _n(gb), np.arccos(np.clip(cos, -1, 1))


def grad_angle_degrees(gb, ga):
    cos = np.sum(gb * ga) / (_n(gb) * _n(ga))
    return _n(ga - gb) / _n(gb), np.degrees(np.arccos(np.clip(cos, -1, 1)))


def grad_cos_distance(gb, ga):
    return _n(ga - gb) / _n(gb), 1 - np.sum(gb * ga) / (_n(gb) * _n(ga))


def grad_good_vdot(gb, ga):
    a, b = gb.ravel(), ga.ravel()
    return float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(np.vdot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def grad_good_einsum_float64(gb, ga):
    """Right: float64 sums by einsum over every axis."""
    a, b = gb.astype(np.float64), ga.astype(np.float64)
    sub = "".join("ijkl"[:a.ndim])
    dot = lambda u, v: np.einsum(f"{sub},{sub}->", u, v)  # noqa: E731
    return np.sqrt(dot(b - a, b - a) / dot(a, a)), dot(a, b) / np.sqrt(dot(a, a) * dot(b, b))


# ------------------------------------------------------------------------------ noisy_batchnorm_forward


def _bn(x, g, b, eps, axis=0, ddof=0):
    mu = x.mean(axis, keepdims=True)
    return g * (x - mu) / np.sqrt(x.var(axis, ddof=ddof, keepdims=True) + eps) + b


def noisy_no_eps(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / x.std(0)
    return scale * (gamma * x_hat + beta) + shift


def noisy_swapped_affine(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return scale * (beta * x_hat + gamma) + shift


def noisy_before(x, gamma, beta, scale, shift, eps=1e-5):
    return _bn(scale * x + shift, gamma, beta, eps)


def noisy_left_out(x, gamma, beta, scale, shift, eps=1e-5):
    return _bn(x, gamma, beta, eps)


def noisy_scale_shift_swapped(x, gamma, beta, scale, shift, eps=1e-5):
    return shift * _bn(x, gamma, beta, eps) + scale


def noisy_on_xhat(x, gamma, beta, scale, shift, eps=1e-5):
    return gamma * (scale * _bn(x, 1.0, 0.0, eps) + shift) + beta


def noisy_axis1(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * _bn(x, gamma, beta, eps, axis=1) + shift


def noisy_unbiased(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * _bn(x, gamma, beta, eps, ddof=1) + shift


def noisy_eps_outside(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / (x.std(0) + eps)
    return scale * (gamma * x_hat + beta) + shift


def noisy_over_var(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / (x.var(0) + eps)
    return scale * (gamma * x_hat + beta) + shift


def noisy_shift_forgotten(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * _bn(x, gamma, beta, eps)


def noisy_fixed_eps(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * _bn(x, gamma, beta, 1e-5) + shift


def noisy_good_transposed_keepdim(x, gamma, beta, scale, shift, eps=1e-5):
    """Right: features as rows (D, N), statistics kept as (D, 1), einsum for the affine."""
    xt = x.T
    x_hat = (xt - xt.mean(1, keepdims=True)) / np.sqrt(xt.var(1, keepdims=True) + eps)
    return (np.einsum("dn,d->dn", x_hat, gamma) + beta[:, None]).T * scale + shift


def noisy_good_float64(x, gamma, beta, scale, shift, eps=1e-5):
    x64 = x.astype(np.float64)
    out = scale * _bn(x64, gamma, beta, eps) + shift
    return out.astype(x.dtype)


WRONG = [
    ("input_drift", ["wrong axis"], drift_axis1),
    ("input_drift", ["one mean and std for the whole layer", "pooled"], drift_pooled),
    ("input_drift", ["signed"], drift_signed),
    ("input_drift", ["not relative"], drift_absolute),
    ("input_drift", ["ddof=1"], drift_ddof1),
    ("input_drift", ["variance instead of standard deviation"], drift_variance),
    ("input_drift", ["only the means"], drift_means_only),
    ("input_drift", ["spread after"], drift_after),
    ("input_drift", ["activations compared"], drift_elementwise),
    ("input_drift", ["per unit"], drift_per_unit_ratio),
    ("gradient_change", ["dot product"], grad_dot),
    ("gradient_change", ["per row"], grad_rows),
    ("gradient_change", ["2-norm", "spectral", "singular"], grad_spectral),
    ("gradient_change", ["||g_after||"], grad_rel_after),
    ("gradient_change", ["absolute change"], grad_absolute),
    ("gradient_change", ["difference of the norms"], grad_norm_diff),
    ("gradient_change", ["squared"], grad_squared),
    ("gradient_change", ["wrong order"], grad_order),
    ("gradient_change", ["angle"], grad_angle),
    ("gradient_change", ["angle"], grad_angle_degrees),
    ("gradient_change", ["1 - cosine", "cosine distance"], grad_cos_distance),
    ("noisy_batchnorm_forward", ["eps missing"], noisy_no_eps),
    ("noisy_batchnorm_forward", ["gamma and beta swapped"], noisy_swapped_affine),
    ("noisy_batchnorm_forward", ["before normalizing"], noisy_before),
    ("noisy_batchnorm_forward", ["noise left out"], noisy_left_out),
    ("noisy_batchnorm_forward", ["scale and shift swapped"], noisy_scale_shift_swapped),
    ("noisy_batchnorm_forward", ["applied to x_hat"], noisy_on_xhat),
    ("noisy_batchnorm_forward", ["wrong axis"], noisy_axis1),
    ("noisy_batchnorm_forward", ["unbiased variance"], noisy_unbiased),
    ("noisy_batchnorm_forward", ["eps outside"], noisy_eps_outside),
    ("noisy_batchnorm_forward", ["divided by the variance"], noisy_over_var),
    ("noisy_batchnorm_forward", ["shift forgotten"], noisy_shift_forgotten),
    ("noisy_batchnorm_forward", ["eps argument ignored", "eps hard-coded"], noisy_fixed_eps),
]
RIGHT = [("input_drift", drift_good_einsum), ("input_drift", drift_good_transposed), ("gradient_change", grad_good_vdot),
         ("gradient_change", grad_good_einsum_float64), ("noisy_batchnorm_forward", noisy_good_transposed_keepdim),
         ("noisy_batchnorm_forward", noisy_good_float64)]


# issue 21: the measure's choices (how the units' changes are summed up, made positive, divided)
def drift_max(a, b):
    return float((np.abs(b.mean(0) - a.mean(0)).max() + np.abs(b.std(0) - a.std(0)).max()) / a.std(0).mean())


def drift_l2(a, b):
    return float((np.linalg.norm(b.mean(0) - a.mean(0)) + np.linalg.norm(b.std(0) - a.std(0))) / a.std(0).mean())


def drift_squared(a, b):
    return float((((b.mean(0) - a.mean(0)) ** 2).mean() + ((b.std(0) - a.std(0)) ** 2).mean()) / a.std(0).mean())


def drift_abs_after(a, b):
    return float((abs((b.mean(0) - a.mean(0)).mean()) + abs((b.std(0) - a.std(0)).mean())) / a.std(0).mean())


def drift_pooled_spread(a, b):
    return float((np.abs(b.mean(0) - a.mean(0)).mean() + np.abs(b.std(0) - a.std(0)).mean()) / a.std())


def grad_l1(a, b):
    a, b = a.ravel(), b.ravel()
    return float(np.abs(b - a).sum() / np.abs(a).sum()), float(a @ b / (np.abs(a).sum() * np.abs(b).sum()))


def grad_sum_of_norms(a, b):
    na, nb_ = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.linalg.norm(b - a) / (na + nb_)), float((a * b).sum() / (na * nb_))


def noisy_shift_inside(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * (gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta + shift)


def noisy_beta_outside(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta + shift


def noisy_sqrt_std(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * (gamma * (x - x.mean(0)) / np.sqrt(x.std(0) + eps) + beta) + shift


WRONG += [
    ("input_drift", ["largest change"], drift_max),
    ("input_drift", ["l2 norm"], drift_l2),
    ("input_drift", ["squared changes"], drift_squared),
    ("input_drift", ["signed", "after averaging"], drift_abs_after),
    ("input_drift", ["spread of the whole array", "one mean and std for the whole layer"], drift_pooled_spread),
    ("gradient_change", ["l1 norms"], grad_l1),
    ("gradient_change", ["||g_before|| + ||g_after||"], grad_sum_of_norms),
    ("noisy_batchnorm_forward", ["shift added before scaling"], noisy_shift_inside),
    ("noisy_batchnorm_forward", ["beta left out of the scaling"], noisy_beta_outside),
    ("noisy_batchnorm_forward", ["square root taken of the standard deviation"], noisy_sqrt_std),
]


# issue 21, held-out set 4's failures and their neighbours
def drift_std_change_signed(a, b):
    dm = np.abs(b.mean(0) - a.mean(0)).mean()
    ds = (b.std(0) - a.std(0)).mean()
    return float((dm + ds) / a.std(0).mean())


def drift_mean_change_signed(a, b):
    return float(((b.mean(0) - a.mean(0)).mean() + np.abs(b.std(0) - a.std(0)).mean()) / a.std(0).mean())


def drift_precedence(a, b):
    dm = np.mean(np.abs(b.mean(axis=0) - a.mean(axis=0)))
    ds = np.mean(np.abs(b.std(axis=0) - a.std(axis=0)))
    return float(dm + ds / np.mean(a.std(axis=0)))


def drift_precedence_means(a, b):
    spread = a.std(0).mean()
    return float(np.abs(b.mean(0) - a.mean(0)).mean() / spread + np.abs(b.std(0) - a.std(0)).mean())


def drift_sorted_quantiles(a, b):
    qa, qb = np.sort(a, axis=0), np.sort(b, axis=0)
    return float(np.mean(np.abs(qb - qa)) / np.mean(a.std(axis=0)))


def drift_sorted_flat(a, b):
    return float(np.abs(np.sort(b.ravel()) - np.sort(a.ravel())).mean() / a.std(0).mean())


def drift_over_abs_mean(a, b):
    dm = np.abs(b.mean(0) - a.mean(0))
    ds = np.abs(b.std(0) - a.std(0))
    return float((dm.mean() + ds.mean()) / np.abs(a.mean(0)).mean())


def grad_abs_cosine(a, b):
    a, b = a.ravel(), b.ravel()
    cos = abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(cos)


def grad_rel_mean_norms(a, b):
    na, nb_ = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.linalg.norm(b - a) / ((na + nb_) / 2)), float(np.sum(a * b) / (na * nb_))


def grad_rel_max_norm(a, b):
    na, nb_ = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.linalg.norm(b - a) / max(na, nb_)), float(np.sum(a * b) / (na * nb_))


def noisy_pooled(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean()) / np.sqrt(x.var() + eps)
    return scale * (gamma * x_hat + beta) + shift


def noisy_var_pooled(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(axis=0)) / np.sqrt(np.var(x) + eps)
    return scale * (gamma * x_hat + beta) + shift


def noisy_beta_in_bracket(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return scale * (gamma * (x_hat + beta)) + shift


WRONG += [
    ("input_drift", ["signed change of the std"], drift_std_change_signed),
    ("input_drift", ["signed change of the mean"], drift_mean_change_signed),
    ("input_drift", ["operator precedence"], drift_precedence),
    ("input_drift", ["operator precedence"], drift_precedence_means),
    ("input_drift", ["sorted activations"], drift_sorted_quantiles),
    ("input_drift", ["sorted activations"], drift_sorted_flat),
    ("input_drift", ["mean |mean|"], drift_over_abs_mean),
    ("gradient_change", ["absolute value of the cosine"], grad_abs_cosine),
    ("gradient_change", ["mean of the two norms"], grad_rel_mean_norms),
    ("gradient_change", ["larger of the two norms", "||g_after||"], grad_rel_max_norm),
    ("noisy_batchnorm_forward", ["whole array"], noisy_pooled),
    ("noisy_batchnorm_forward", ["whole array"], noisy_var_pooled),
    ("noisy_batchnorm_forward", ["beta scaled by gamma"], noisy_beta_in_bracket),
]


def grad_np_dot_matrices(a, b):
    na, nb_ = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.linalg.norm(b - a) / na), float(np.dot(a, b) / (na * nb_))


def noisy_axis1_no_keepdims(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(axis=1)) / np.sqrt(x.var(axis=1) + eps)
    return scale * (gamma * x_hat + beta) + shift


WRONG += [
    ("gradient_change", ["matrix product"], grad_np_dot_matrices),
    ("noisy_batchnorm_forward", ["wrong axis"], noisy_axis1_no_keepdims),
]


# more neighbours: what the measure is divided by, what it compares, what it returns
def drift_over_mean_spread_before_after(a, b):
    moved = np.abs(b.mean(0) - a.mean(0)).mean() + np.abs(b.std(0) - a.std(0)).mean()
    return float(moved / ((a.std(0).mean() + b.std(0).mean()) / 2))


def drift_per_unit_array(a, b):
    return (np.abs(b.mean(0) - a.mean(0)) + np.abs(b.std(0) - a.std(0))) / a.std(0).mean()


def drift_variance_change(a, b):
    return float((np.abs(b.mean(0) - a.mean(0)).mean() + np.abs(b.var(0) - a.var(0)).mean()) / a.std(0).mean())


def drift_stds_only(a, b):
    return float(np.abs(b.std(0) - a.std(0)).mean() / a.std(0).mean())


def grad_corrcoef(a, b):
    return float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def grad_per_column(a, b):
    rel = np.linalg.norm(b - a, axis=0) / np.linalg.norm(a, axis=0)
    cos = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return float(rel.mean()), float(cos.mean())


def grad_squared_numerator(a, b):
    return float(np.sum((b - a) ** 2) / np.linalg.norm(a)), float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def grad_cosine_squared_norms(a, b):
    return float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(np.sum(a * b) / (np.sum(a * a) * np.sum(b * b)))


def noisy_shift_multiplied(x, gamma, beta, scale, shift, eps=1e-5):
    return scale * (gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta) * shift


def noisy_divided_by_scale(x, gamma, beta, scale, shift, eps=1e-5):
    return (gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta) / scale + shift


WRONG += [
    ("input_drift", ["spreads before and after"], drift_over_mean_spread_before_after),
    ("input_drift", ["one value per unit"], drift_per_unit_array),
    ("input_drift", ["change of the variances"], drift_variance_change),
    ("input_drift", ["only the stds compared"], drift_stds_only),
    ("gradient_change", ["Pearson correlation"], grad_corrcoef),
    ("gradient_change", ["per column"], grad_per_column),
    ("gradient_change", ["no square root in the numerator"], grad_squared_numerator),
    ("gradient_change", ["squared norms"], grad_cosine_squared_norms),
    ("noisy_batchnorm_forward", ["shift multiplied"], noisy_shift_multiplied),
    ("noisy_batchnorm_forward", ["divided by the noise scale"], noisy_divided_by_scale),
]


def drift_abs_of_sum(a, b):
    return float(np.mean(np.abs((b.mean(0) - a.mean(0)) + (b.std(0) - a.std(0)))) / np.mean(a.std(0)))


def drift_rms_std(a, b):
    sa, sb = np.sqrt(np.mean(a ** 2, axis=0)), np.sqrt(np.mean(b ** 2, axis=0))
    return float((np.abs(b.mean(0) - a.mean(0)).mean() + np.abs(sb - sa).mean()) / sa.mean())


def grad_norm_ratio(a, b):
    return float(np.linalg.norm(b) / np.linalg.norm(a)), float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


WRONG += [
    ("input_drift", ["absolute value of the sum"], drift_abs_of_sum),
    ("input_drift", ["without centring"], drift_rms_std),
    ("gradient_change", ["ratio of the norms"], grad_norm_ratio),
]


from .round6 import WRONG_BY_NB as _ROUND6  # noqa: E402 - a sixth held-out round's misses

WRONG += _ROUND6.get("7", [])


from .round7 import WRONG_BY_NB as _ROUND7  # noqa: E402 - a seventh held-out round's misses and their neighbours

WRONG += _ROUND7.get("7", [])
