"""The course's hints, as data: three per graded exercise (a nudge, the key equation, the shape of
the code) and one per named mistake, keyed by the mistake's stable id.

Rules for authors: a hint never holds a line of the reference solution; each rung says more than
the one before; the third describes the steps in words and names the numpy/torch functions, but
leaves writing the code to the learner. ``tests/test_hints.py`` holds every hint to those rules.

``EXERCISES``: exercise id (the solution cell's nbgrader grade_id) -> ``Exercise``.
``MISTAKE_HINTS``: mistake id (``mistake_id(name)`` of the check's mistake name) -> hint.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: where it is, what the learner writes, and its three hints."""

    id: str  # the solution cell's grade_id; its test cell is f"{id}_tests"
    notebook: str  # the assignment folder, e.g. "02_batchnorm_forward"
    function: str  # the name the learner defines in that cell
    check: str  # the check function the test cell calls
    hints: tuple[str, str, str]


def _ex(id, notebook, function, check, nudge, equation, shape) -> Exercise:
    return Exercise(id, notebook, function, check, (nudge, equation, shape))


EXERCISES: dict[str, Exercise] = {e.id: e for e in [
    # ---- notebook 1 -------------------------------------------------------------------------
    _ex("standardize", "01_why_normalize", "standardize", "check_standardize",
        "Both arrays are scaled with statistics of the TRAINING data only: the test data must not "
        "leak into the mean or the spread.",
        "Per feature j: x'_ij = (x_ij - mean_j) / std_j, where mean_j and std_j are computed over the "
        "N training rows (axis 0) with the population standard deviation (divide by N, numpy's default).",
        "Shape of the code: (1) turn both inputs into float64 arrays; (2) take the mean and the std of "
        "X_train down its rows, giving two (D,) vectors; (3) subtract the mean and divide by the std in "
        "BOTH arrays, letting broadcasting stretch the (D,) vectors over the rows; (4) return the pair "
        "(train, test) in that order."),
    _ex("min_max_scale", "01_why_normalize", "min_max_scale", "check_min_max_scale",
        "The training data's smallest value of each feature maps to 0 and its largest to 1; the test "
        "data reuses those two numbers.",
        "Per feature j: x'_ij = (x_ij - min_j) / (max_j - min_j), with min_j and max_j over the "
        "training rows only. The denominator is the RANGE, not the maximum.",
        "Shape of the code: (1) float64 copies of both inputs; (2) the per-feature minimum and maximum "
        "of X_train down its rows (axis 0), two (D,) vectors; (3) subtract the minimum, divide by "
        "max minus min, in both arrays; (4) return (train_scaled, test_scaled)."),
    # ---- notebook 2 -------------------------------------------------------------------------
    _ex("batchnorm_forward", "02_batchnorm_forward", "batchnorm_forward", "check_batchnorm_forward",
        "Each of the D features (columns) gets its own mean and variance, computed over the N examples "
        "of the batch (the rows). Then scale by gamma and shift by beta.",
        "mu = mean over the batch, var = mean((x - mu)^2) over the batch (the biased variance, divide "
        "by N), x_hat = (x - mu) / sqrt(var + eps), out = gamma x_hat + beta (per column). eps goes INSIDE the "
        "square root.",
        "Shape of the code: (1) the column means, a (D,) vector (axis=0); (2) the centred batch; "
        "(3) the biased variance of each column from it; (4) one over the square root of (variance "
        "plus eps); (5) x_hat as the centred batch times that; (6) out from gamma, x_hat and beta; "
        "(7) return out and a cache tuple holding what the backward pass will need (x_hat, the inverse "
        "std, gamma)."),
    _ex("update_running_stats", "02_batchnorm_forward", "update_running_stats", "check_update_running_stats",
        "The running statistics are an exponential moving average. In PyTorch's convention, momentum "
        "is the weight of the NEW batch, and running_var stores the UNBIASED variance.",
        "new running mean = (1 - momentum) times the old one plus momentum times the batch mean; the "
        "same blend for the variance, with the batch's UNBIASED variance, where the unbiased variance divides by N - 1 "
        "(numpy: ddof=1).",
        "Shape of the code: (1) the batch mean of each column (axis=0); (2) the batch variance of each "
        "column with ddof=1; (3) blend each into its running value with the formula above; (4) return "
        "the two NEW arrays, leaving running_mean and running_var unchanged (no +=, no slice "
        "assignment into them)."),
    _ex("batchnorm_inference", "02_batchnorm_forward", "batchnorm_inference", "check_batchnorm_inference",
        "At inference the batch's own statistics are not used: every example is normalized with the "
        "running mean and running variance.",
        "out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta: a fixed affine map per "
        "feature, with eps inside the square root as in training.",
        "Shape of the code: (1) subtract running_mean from x (broadcast over the rows); (2) divide by "
        "the square root of running_var plus eps; (3) multiply by gamma and add beta; (4) return that "
        "one (N, D) array (no cache this time)."),
    # ---- notebook 3 -------------------------------------------------------------------------
    _ex("batchnorm_backward_staged", "03_batchnorm_backward", "batchnorm_backward_staged",
        "check_batchnorm_backward_staged",
        "Walk the forward pass backwards, one node at a time, and apply the chain rule at each. x "
        "reaches the output by three paths (directly, through the mean, through the variance): their "
        "gradients add up.",
        "Key local derivatives: d(gamma*x_hat + beta) gives dbeta = sum(dout), dgamma = sum(dout * "
        "x_hat), dx_hat = dout * gamma; d(1/s)/ds = -1/s^2; d sqrt(v + eps)/dv = 1 / (2 sqrt(v + eps)); "
        "a mean over N rows hands each row 1/N of the upstream gradient; d(u^2)/du = 2u.",
        "Shape of the code, eight steps mirroring the forward graph: (1) dbeta, dgamma and dx_hat from "
        "the affine step, summing over the batch axis for the two parameters; (2) split dx_hat into the "
        "gradient of the centred input and of the inverse std (a sum over rows); (3) inverse std -> std; "
        "(4) std -> variance; (5) variance -> the squared centred input, 1/N per row; (6) add the second "
        "path into the centred input, 2 * centred * that; (7) the centred input -> x and -> the mean "
        "(minus a sum over rows); (8) add the mean's gradient shared out as 1/N per row."),
    _ex("batchnorm_backward", "03_batchnorm_backward", "batchnorm_backward", "check_batchnorm_backward",
        "Start from your staged backward and simplify on paper: everything can be written with dout, "
        "x_hat, gamma, the inverse std and two sums over the batch.",
        "dbeta = sum_i dout_i, dgamma = sum_i dout_i * x_hat_i, and dx = (gamma * inv_std / N) * "
        "(N * dout - dbeta - x_hat * dgamma), all sums over the batch axis (axis 0).",
        "Shape of the code: (1) N from dout's first dimension; (2) dbeta as the column sums of dout; "
        "(3) dgamma as the column sums of dout times x_hat from the cache; (4) dx in one expression "
        "from the closed form above, reusing dbeta and dgamma; (5) return the three gradients, dx first, then "
        "dgamma and dbeta."),
    _ex("spatial_batchnorm_forward", "03_batchnorm_backward", "spatial_batchnorm_forward",
        "check_spatial_batchnorm_forward",
        "For images, batch norm keeps one mean and one variance per CHANNEL, taken over the batch and "
        "over every pixel position. You already have a batch norm for (rows, features) input: reuse it.",
        "Treat every (image, row, column) position as one example: the (N, C, H, W) input becomes an "
        "(N*H*W, C) matrix whose columns are the channels; normalize that with your batchnorm_forward "
        "and undo the rearrangement.",
        "Shape of the code: (1) move the channel axis last with a transpose to (N, H, W, C); (2) reshape "
        "to (N*H*W, C); (3) call your batchnorm_forward on it; (4) reshape the result to (N, H, W, C) and "
        "transpose back to (N, C, H, W); (5) return out and a cache that holds the rows' cache and the "
        "input's shape."),
    _ex("spatial_batchnorm_backward", "03_batchnorm_backward", "spatial_batchnorm_backward",
        "check_spatial_batchnorm_backward",
        "The backward pass undoes the same rearrangement as the forward pass: bring dout into the "
        "(rows, channels) layout, use your (N, D) backward, and bring dx back.",
        "With the forward's reshape R (channels last, then flattened), dx = R^-1(batchnorm_backward("
        "R(dout), cache)); dgamma and dbeta come out of the (N, D) backward already summed over N, H "
        "and W, shape (C,).",
        "Shape of the code: (1) unpack the rows' cache and (N, C, H, W) from your cache; (2) transpose "
        "dout to (N, H, W, C) and reshape to (N*H*W, C); (3) call your batchnorm_backward; (4) reshape dx "
        "to (N, H, W, C) and transpose back to (N, C, H, W); (5) return the gradients in the order dx, dgamma, dbeta."),
    # ---- notebook 4 -------------------------------------------------------------------------
    _ex("batchnorm_function", "04_batchnorm_pytorch", "BatchNormFunction", "check_batchnorm_function",
        "An autograd.Function wraps code autograd cannot see: forward runs your numpy batchnorm_forward "
        "and keeps its cache on ctx; backward runs your numpy batchnorm_backward.",
        "forward(ctx, x, gamma, beta, eps) -> out, with out's dtype and device equal to x's (the numpy "
        "work happens in float64 on the CPU); backward(ctx, dout) -> one gradient per input of forward: "
        "(dx, dgamma, dbeta, None), the None for eps, which needs no gradient.",
        "Shape of the code: forward: (1) detach each tensor, move it to the CPU, make it float64 and "
        "take .numpy(); (2) call your batchnorm_forward; (3) store the cache on ctx; (4) return "
        "torch.from_numpy(out) moved to x's device and dtype. backward: (1) dout to numpy the same way; "
        "(2) your batchnorm_backward with the stored cache; (3) each gradient back to a tensor on dout's "
        "device and dtype; (4) return four values, the last one None."),
    _ex("batchnorm1d_module", "04_batchnorm_pytorch", "BatchNorm1dNumpy", "check_batchnorm1d_module",
        "A module has learnable parameters (weight, bias) and buffers that are saved but not learned "
        "(running_mean, running_var). In training mode it uses your BatchNormFunction and updates the "
        "buffers; in eval mode it uses the buffers only.",
        "Start values as in torch: weight ones, bias zeros, running_mean zeros, running_var ones. "
        "Training: out = BatchNormFunction(x), then running stats updated with momentum weighting the "
        "new batch (unbiased variance). Eval: out = weight * (x - running_mean) / sqrt(running_var + eps) "
        "+ bias.",
        "Shape of the code: __init__: nn.Parameter for weight and bias, register_buffer for the two "
        "running statistics. forward: (1) if not self.training, return the eval formula from the buffers; "
        "(2) otherwise out from BatchNormFunction.apply with weight, bias and eps; (3) the new running "
        "statistics from your update_running_stats on numpy copies; (4) copy them into the buffers in "
        "place (their .copy_ method), without tracking gradients; (5) return out."),
    _ex("batchnorm2d", "04_batchnorm_pytorch", "BatchNorm2d", "check_batchnorm2d",
        "Same as BatchNorm1d, but per channel over N, H and W, written in torch (so autograd does the "
        "backward). Shapes (C,) must be viewed as (1, C, 1, 1) to broadcast over an image batch.",
        "Training: mean and biased variance over dims (0, 2, 3) normalize the batch; the running "
        "variance gets the unbiased one, var * n / (n - 1) with n = N*H*W; running = (1 - momentum) * "
        "running + momentum * batch. Eval: the running statistics instead. Count num_batches_tracked "
        "as torch does.",
        "Shape of the code: __init__: parameters weight (ones) and bias (zeros); buffers running_mean, "
        "running_var and a long num_batches_tracked. forward: (1) in training, the batch mean and "
        "biased variance over (0, 2, 3), then update the three buffers in place under torch.no_grad(); "
        "(2) in eval, take mean and variance from the buffers; (3) view each (C,) vector as (1, C, 1, 1); "
        "(4) normalize with eps inside the square root, then scale by weight and shift by bias."),
    # ---- notebook 5 -------------------------------------------------------------------------
    _ex("fig1-percentiles", "05_figure1", "sigmoid_input_percentiles", "check_sigmoid_input_percentiles",
        "Each ROW of records is one snapshot in time of the sigmoid's input on N examples; the figure "
        "needs three numbers per snapshot.",
        "bands[t] = (15th, 50th, 85th percentile of records[t, :]): percentiles in percent (15, not "
        "0.15), taken along axis 1, one row of three per snapshot.",
        "Shape of the code: one call to np.percentile with the list of the three percentages and "
        "axis=1; it returns shape (3, T), so transpose it to (T, 3) before returning."),
    # ---- notebook 6 -------------------------------------------------------------------------
    _ex("cnn-recompute", "06_cnns_gpu", "recompute_bn_statistics", "check_recompute_bn_statistics",
        "The running statistics only change in training mode, during a forward pass. To re-estimate "
        "them, forget the old values and feed the batches through without learning anything.",
        "With momentum=None, torch's batch norm keeps a CUMULATIVE average (every batch weighs the "
        "same) instead of an exponential one; reset_running_stats() starts it from scratch. No "
        "gradients, no optimizer step.",
        "Shape of the code: (1) collect every batch norm layer (isinstance of "
        "nn.modules.batchnorm._BatchNorm) and remember each one's momentum and the model's mode; "
        "(2) reset each layer's running stats and set its momentum to None; (3) put the model in training mode, then run "
        "every batch through under torch.no_grad(), on the model's device; (4) put the momenta and the "
        "model's mode back; (5) return the model."),
    # ---- notebook 7 -------------------------------------------------------------------------
    _ex("input_drift", "07_what_batchnorm_does", "input_drift", "check_input_drift",
        "Drift measures how much a layer's input distribution moved between two moments: compare each "
        "unit's mean and spread before and after, and make the number scale-free.",
        "drift = (mean_j |mean_after_j - mean_before_j| + mean_j |std_after_j - std_before_j|) / "
        "mean_j std_before_j, where mean_j and std_j are per unit (column), over the N probe examples.",
        "Shape of the code: (1) the per-column means and stds of both arrays (axis=0); (2) the average "
        "absolute change of the means and of the stds, two scalars; (3) their sum divided by the average "
        "std before; (4) return it as a plain Python float."),
    _ex("gradient_change", "07_what_batchnorm_does", "gradient_change", "check_gradient_change",
        "Treat each gradient as one long vector; compare the two vectors by how far apart they are "
        "and by the angle between them.",
        "relative_change = ||g_after - g_before|| / ||g_before||; cosine = <g_before, g_after> / "
        "(||g_before|| * ||g_after||), with Euclidean norms over all entries.",
        "Shape of the code: (1) both arrays as float64 and flattened (ravel); (2) the two norms with "
        "np.linalg.norm; (3) the relative change from the norm of the difference; (4) the cosine from "
        "the dot product; (5) return both as plain floats, relative change first."),
    _ex("noisy_batchnorm_forward", "07_what_batchnorm_does", "noisy_batchnorm_forward",
        "check_noisy_batchnorm_forward",
        "Your batch norm forward with one more affine step on top: the noise scales and shifts the "
        "OUTPUT of batch norm.",
        "out = scale * (gamma * x_hat + beta) + shift, with x_hat = (x - mean) / sqrt(var + eps) "
        "from the batch's mean and biased variance per column.",
        "Shape of the code: (1) the per-column mean and biased variance (axis=0); (2) x_hat with eps "
        "inside the square root; (3) batch norm's output from gamma and beta; (4) multiply by scale and "
        "add shift; (5) return that (N, D) array alone."),
    # ---- notebook 8 -------------------------------------------------------------------------
    _ex("sync-forward", "08_batchnorm_across_devices", "sync_batch_norm_forward", "check_sync_batchnorm_forward",
        "Each rank holds only a slice of the batch. Means and variances of the whole batch cannot be "
        "averaged from the slices' means and variances; SUMS can be added up across the ranks.",
        "With S = sum of x, Q = sum of x^2 and n = the row count, all summed over every rank with one "
        "all_reduce: mean = S / n, var = Q / n - mean^2 (biased, clamp at 0), x_hat = (x - mean) / "
        "sqrt(var + eps); running_var gets var * n / (n - 1) with the GLOBAL n.",
        "Shape of the code: (1) pack the local column sums, sums of squares and the local row count into "
        "one float64 tensor; (2) dist.all_reduce it (a sum, the default); (3) unpack n, the mean and the "
        "biased variance; (4) the inverse std with torch.rsqrt; (5) x_hat in x's dtype and y from weight "
        "and bias; (6) update both running buffers in place under torch.no_grad() with momentum; "
        "(7) return y and a SyncBNCache of x_hat, the inverse std, weight and n."),
    _ex("sync-backward", "08_batchnorm_across_devices", "sync_batch_norm_backward", "check_sync_batchnorm_backward",
        "dx of one row depends on the whole batch, so it needs two sums over ALL ranks; dweight and "
        "dbias, by contrast, stay this rank's own sums (DDP adds them up later).",
        "dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), where the two means are "
        "over the global batch: the all-reduced sums divided by the global n. dbias = sum(dy), "
        "dweight = sum(dy * x_hat) over this rank's rows.",
        "Shape of the code: (1) unpack x_hat, invstd, weight and n from the cache; (2) this rank's column "
        "sums of dy and of dy * x_hat; (3) concatenate them into one float64 tensor and all_reduce it; "
        "(4) divide by n for the two global means, back in dy's dtype; (5) dx from the formula; "
        "(6) return dx, then this rank's (un-reduced) sum of dy * x_hat and sum of dy."),
    # ---- notebook 9 -------------------------------------------------------------------------
    _ex("layernorm_forward", "09_beyond_batchnorm", "layernorm_forward", "check_layernorm_forward",
        "Layer norm is batch norm turned sideways: each ROW (example) is normalized over its own D "
        "features; gamma and beta are still one per feature.",
        "mu_i = mean_j x_ij, var_i = mean_j (x_ij - mu_i)^2 (biased), x_hat = (x - mu) / sqrt(var + "
        "eps), out = gamma x_hat + beta; the statistics have shape (N, 1).",
        "Shape of the code: (1) the row means with axis=1 and keepdims=True, shape (N, 1); (2) the centred "
        "input; (3) its row variance the same way; (4) the inverse std with eps inside the root; "
        "(5) x_hat and out (gamma and beta broadcast along the rows); (6) return out and a cache of "
        "x_hat, the inverse std and gamma."),
    _ex("layernorm_backward", "09_beyond_batchnorm", "layernorm_backward", "check_layernorm_backward",
        "It is batch norm's closed-form backward with the roles of the axes swapped for dx (the sums run "
        "over each row's D features), while dgamma and dbeta are still sums over the batch.",
        "dbeta = sum over rows of dout, dgamma = sum over rows of dout * x_hat; with g = gamma dout (per feature), "
        "dx = (inv_std / D) * (D * g - sum_j g - x_hat * sum_j (g * x_hat)), the sums over axis 1 "
        "with keepdims.",
        "Shape of the code: (1) unpack x_hat, the inverse std and gamma; (2) D from dout's second "
        "dimension; (3) dbeta and dgamma as column sums (axis=0); (4) g as dout times gamma; (5) dx from "
        "the formula with the two per-row sums kept as (N, 1); (6) return the gradients in the order dx, dgamma, dbeta."),
    _ex("groupnorm_forward", "09_beyond_batchnorm", "groupnorm_forward", "check_groupnorm_forward",
        "Group norm normalizes each image on its own, over groups of C/G ADJACENT channels and all "
        "their pixels; gamma and beta are still one per channel.",
        "Reshape x to (N, G, C/G * H * W): then each group is one row of the last axis; mean and biased "
        "variance over that axis, x_hat = (x - mean) / sqrt(var + eps), reshaped back to (N, C, H, W), "
        "and out = gamma x_hat + beta with gamma, beta as (1, C, 1, 1).",
        "Shape of the code: (1) N, C, H, W from x.shape; (2) x reshaped to (N, G, -1); (3) mean and "
        "variance along axis 2 with keepdims; (4) the inverse std; (5) x_hat in the grouped shape, then "
        "reshaped to (N, C, H, W); (6) out with gamma and beta reshaped to (1, C, 1, 1); (7) return out "
        "and a cache of x_hat, the inverse std, gamma and G."),
    _ex("groupnorm_backward", "09_beyond_batchnorm", "groupnorm_backward", "check_groupnorm_backward",
        "Same closed form as layer norm's backward, applied inside each group: work in the grouped "
        "shape (N, G, M) with M = C/G * H * W values per group, and reshape dx back at the end.",
        "dbeta = sum of dout over (0, 2, 3), dgamma = sum of dout * x_hat over (0, 2, 3); with g = dout * "
        "gamma (per channel) in the grouped shape, dx = (inv_std / M) * (M * g - sum g - x_hat * sum(g * "
        "x_hat)), the sums over each group's M values.",
        "Shape of the code: (1) unpack the cache and the shape; (2) dgamma and dbeta over axes (0, 2, 3); "
        "(3) g = dout times gamma viewed as (1, C, 1, 1), reshaped to (N, G, -1), and x_hat the same way; "
        "(4) M from the last axis; (5) dx from the formula with keepdims sums along axis 2; (6) dx "
        "reshaped to (N, C, H, W); return dx, then dgamma and dbeta."),
    # ---- notebook 10 ------------------------------------------------------------------------
    _ex("fold_batchnorm", "10_folding", "fold_batchnorm", "check_fold_batchnorm",
        "In eval mode batch norm is a fixed affine map per output channel, so it can be merged into the "
        "layer before it: scale that channel's weights, and fold everything else into the bias.",
        "With s = bn.weight / sqrt(bn.running_var + bn.eps) per output channel: W' = s * W (row by "
        "row, along the OUTPUT-channel axis 0) and b' = s * (b - running_mean) + bn.bias, where b = 0 "
        "for a layer without a bias.",
        "Shape of the code: under torch.no_grad(): (1) s from the batch norm's weight, running variance "
        "and eps; (2) the layer's bias, or zeros when it has none; (3) a deep copy of the layer (never "
        "change the original); (4) its weight replaced by the scaled weight, s reshaped to (-1, 1, ...) "
        "to match the weight's number of dimensions; (5) its bias a new nn.Parameter from the formula; "
        "(6) return the copy."),
    _ex("fold_model", "10_folding", "fold_model", "check_fold_model",
        "Folding is only correct in eval mode. Walk the model's Sequentials and fold each Conv2d that "
        "is directly followed by a BatchNorm2d; do it on a copy.",
        "For each pair (conv, bn) at positions i, i + 1 of a Sequential: block[i] = your fold_batchnorm("
        "conv, bn) and block[i + 1] = an identity, so the folded model computes the same function with "
        "one layer fewer per pair.",
        "Shape of the code: (1) a deep copy of the model, put in eval mode; (2) loop over its modules(), "
        "keeping the nn.Sequential ones; (3) inside each, loop over adjacent index pairs and test the "
        "two types with isinstance; (4) replace the pair as above (nn.Identity for the batch norm); "
        "(5) return the copy, the original untouched."),
    # ---- notebook 11 ------------------------------------------------------------------------
    _ex("saturated_fraction", "11_inside_the_network", "saturated_fraction", "check_saturated_fraction",
        "h is a layer's OUTPUT, already squashed by its nonlinearity: saturation is about how close "
        "those outputs sit to the nonlinearity's limits, and a dead ReLU unit is one that no example "
        "of the batch switches on.",
        "tanh: the share of entries with |h| > 0.97; sigmoid: the same test on 2h - 1 (its limits are "
        "0 and 1); relu: per unit (every axis but the batch axis 0), active = any example with h > 0, "
        "and the answer is the share of units that are not active.",
        "Shape of the code: branch on kind; for tanh and sigmoid build a boolean tensor from an absolute "
        "value and a comparison, turn it into floats and average it; for relu flatten every axis after "
        "the first, reduce with any over dimension 0, and return one minus the mean of that; return a "
        "Python number (.item()) and raise a ValueError for an unknown kind."),
    _ex("update_to_data_ratio", "11_inside_the_network", "update_to_data_ratio", "check_update_to_data_ratio",
        "Compare the size of one optimizer step with the size of the parameter it was applied to: "
        "a spread against a spread, both measured with the same statistic.",
        "ratio = std(after - before) / std(before): the standard deviation of the update over the "
        "standard deviation of the parameter BEFORE the step (about 1e-3 is Karpathy's healthy value).",
        "Shape of the code: one expression: subtract to get the update, take its std, divide by the std "
        "of the old parameter, and return it as a Python number with .item(); no log10 (the plots take "
        "it), no norms, no means."),
]}

# Other names a learner may type for an exercise: the function or class they wrote, the check's name.
ALIASES: dict[str, str] = {}
for _e in EXERCISES.values():
    for _name in (_e.function, _e.check, _e.function.lower(), _e.id.replace("-", "_")):
        ALIASES.setdefault(_name, _e.id)
ALIASES.update({"BatchNormFunction (gradcheck)": "batchnorm_function", "sync_batchnorm_forward": "sync-forward",
                "sync_batchnorm_backward": "sync-backward"})

# Per-mistake hints, keyed by mistake id = mistake_id(the check's mistake name). One more sentence
# than the check's own message: why the mistake gives the wrong numbers, and what to look at.
MISTAKE_HINTS: dict[str, str] = {
    "divided-by-the-variance": "The variance is in squared units; dividing by it does not give unit spread. "
                               "Take its square root first.",
    "divided-by-the-variance-instead-of-the-standard-deviation":
        "The variance is in squared units; dividing by it does not give unit spread. Take its square root first.",
    "eps-outside-the-square-root": "eps guards the square root of a variance that may be 0: it belongs inside, "
                                   "sqrt(var + eps), as in PyTorch. Outside, the result differs for small variances.",
    "eps-missing": "Without eps a feature whose batch values are all equal divides by zero; add eps to the "
                   "variance before the square root.",
    "eps-argument-ignored": "Use the eps the caller passes in, not a constant of your own.",
    "unbiased-variance-used-to-normalize": "Normalizing uses the biased variance (divide by N, numpy's default "
                                           "ddof=0); only the running variance stores the unbiased one.",
    "normalized-with-the-unbiased-variance": "Normalizing uses the biased variance (divide by N, numpy's default "
                                             "ddof=0); only the running variance stores the unbiased one.",
    "biased-variance-in-running-var": "PyTorch's running_var stores the UNBIASED batch variance (ddof=1, divide "
                                      "by N - 1), although the batch itself is normalized with the biased one.",
    "running-var-updated-with-the-biased-variance": "PyTorch's running_var stores the UNBIASED batch variance "
                                                    "(divide by N - 1), not the biased one used to normalize.",
    "momentum-flipped": "In PyTorch, momentum weighs the NEW batch: (1 - momentum) * running + momentum * batch "
                        "(Keras uses the opposite convention).",
    "momentum-convention-flipped": "In PyTorch, momentum weighs the NEW batch: (1 - momentum) * running + "
                                   "momentum * batch (Keras uses the opposite convention).",
    "one-mean-and-variance-for-the-whole-batch": "Batch norm keeps one mean and variance PER FEATURE: reduce over "
                                                 "the rows only (axis=0), which leaves a (D,) vector.",
    "statistics-over-the-wrong-axis": "Check which axis your mean and variance run over: the result should have "
                                      "one value per normalized unit, and the other axis is the one that disappears.",
    "gamma-and-beta-swapped": "gamma multiplies x_hat, beta is added after.",
    "batch-statistics-used-in-inference": "At inference every example uses the running statistics, so its output "
                                          "does not depend on the rest of the batch.",
    "divided-by-the-maximum-instead-of-the-range": "Subtracting the minimum and dividing by the maximum does not "
                                                   "map the maximum to 1; divide by max - min.",
    "dx-missing-the-terms-that-flow-through-the-mean-and-the-variance":
        "The mean and the variance are functions of x too: each adds a term to dx. Only the direct path is there.",
    "dgamma-and-dbeta-not-summed-over-the-batch": "gamma and beta are shared by all N rows, so their gradients "
                                                  "are sums over the rows, shape (D,).",
    "closed-form-without-the-1-n": "The mean and variance are averages over N rows; the closed form carries a "
                                   "1/N in front (or N in front of dout inside).",
    "reshaped-to-n-h-w-c-without-moving-c-last": "A reshape does not move data between axes: transpose the "
                                                 "channel axis last BEFORE reshaping to (N*H*W, C).",
    "percentiles-not-transposed": "np.percentile with a list of q puts the percentiles first, (3, T): transpose "
                                  "to (T, 3).",
    "fractions-instead-of-percentiles": "np.percentile takes percentages, 15 not 0.15 (np.quantile takes fractions).",
    "statistics-not-reset-first": "Without resetting, the old running statistics still weigh in the average.",
    "no-all-reduce-each-rank-used-only-its-own-slice-plain-batch-norm":
        "The statistics must cover the whole batch, every rank's rows: all_reduce the sums before dividing.",
    "the-ranks-variances-averaged-instead-of-combining-sums": "Averaging variances leaves out how far the ranks' "
                                                              "means lie apart; add up sums and sums of squares instead.",
    "saturation-measured-as-if-h-were-the-pre-activation": "The layer's output is already squashed: compare |h| "
        "itself with 0.97; applying tanh again, or a pre-activation threshold, measures something else.",
    "relu-the-share-of-zero-activations-instead-of-units-never-active": "A unit is dead only when it is zero for "
        "every example of the batch: reduce over the batch axis with any() first, then take the share of units.",
    "ratio-to-the-new-data-after-the-step-instead-of-the-old": "Divide by the spread of the parameter before the "
        "step: the ratio says how big the step was compared with what was there.",
    "caller-module-changed": "Work on a deep copy (copy.deepcopy) of the layer, batch norm or model; the caller's "
                             "objects, their parameters, buffers and train/eval mode, must stay as they were.",
    "signed-changes-units-moving-up-and-down-cancel": "Take the absolute value of each unit's change before "
                                                      "averaging: otherwise units that moved up cancel units that moved down.",
    "not-relative-to-the-input-s-spread": "A drift of 0.1 means little for a layer whose inputs spread over 100; "
                                          "divide by the average spread BEFORE the step to make it scale-free.",
    "only-the-means-compared": "A distribution can keep its mean and still widen: add the change of the "
                               "standard deviations too.",
    "cosine-not-normalized-a-plain-dot-product": "A dot product grows with the vectors' lengths; the cosine "
                                                 "divides it by both norms, so it lies in [-1, 1].",
    "norms-per-row-instead-of-over-the-flattened-gradient": "Flatten each gradient into one vector first: "
                                                            "the norm is over all of its entries.",
    "difference-of-the-norms-instead-of-the-norm-of-the-difference":
        "Two gradients of equal length pointing in different directions differ a lot: take the norm of "
        "the DIFFERENCE, not the difference of the norms.",
    "noise-injected-before-normalizing-the-normalization-removes-it":
        "Normalizing removes any per-feature scale and shift applied before it; the noise must come after.",
    "noise-applied-to-x-hat-before-gamma-and-beta": "The noise scales and shifts batch norm's OUTPUT, after "
                                                    "gamma and beta have been applied.",
    "backward-treats-the-batch-mean-and-variance-as-constants":
        "In training mode the mean and variance depend on x; your numpy batchnorm_backward already "
        "includes those paths, so call it rather than writing a simpler gradient.",
    "ignores-self-training": "A module knows its mode from self.training: batch statistics in training, "
                             "running statistics in eval.",
    "running-statistics-not-updated": "Each training-mode forward pass blends the batch's statistics into "
                                      "running_mean and running_var.",
    "forgot-to-register-buffers": "Plain tensor attributes are not saved by state_dict() nor moved by .to(); "
                                  "register_buffer makes the running statistics part of the module's state.",
    "running-mean-or-running-var-is-an-nn-parameter": "Running statistics are not learned: an optimizer "
                                                      "must not change them, so they are buffers, not parameters.",
    "statistics-per-pixel-position-instead-of-per-channel":
        "For images, each channel has ONE mean and variance, over N, H and W together (dims 0, 2, 3).",
    "dx-reshaped-back-without-the-inverse-transpose": "Undo the steps in reverse: reshape to (N, H, W, C) "
                                                      "first, then transpose the channel axis back to position 1.",
    "backward-all-reduce-forgotten-each-rank-used-its-own-sums":
        "dx needs the sums of dy and dy * x_hat over the WHOLE batch: all_reduce them like the forward's sums.",
    "dweight-and-dbias-all-reduced": "Return this rank's own sums for dweight and dbias: DDP combines "
                                     "parameter gradients across the ranks itself, after the backward pass.",
    "statistics-over-the-batch-axis-batch-norm-by-accident":
        "Layer norm normalizes each example on its own: reduce over the features (axis 1), keeping (N, 1).",
    "groups-formed-from-non-adjacent-channels": "Group g holds channels g*C/G to (g+1)*C/G - 1: reshaping "
                                                "(N, C, H, W) to (N, G, -1) keeps adjacent channels together.",
    "running-variance-without-eps": "Eval-mode batch norm divides by sqrt(running_var + eps); the folded "
                                    "scale must use the same eps.",
    "the-bias-of-a-bias-free-conv-forgotten": "A layer without a bias still gets one after folding: "
                                              "beta - scale * running_mean, from the batch norm alone.",
    "gamma-applied-to-the-bias-twice": "The scale already contains gamma; the folded bias is scale * "
                                       "(b - running_mean) + beta, with gamma only inside the scale.",
    "per-output-channel-scale-broadcast-along-the-wrong-weight-axis":
        "The weight's axis 0 is the OUTPUT channel, the one batch norm normalizes: reshape the scale to "
        "(C_out, 1, 1, 1) (or (out, 1) for Linear).",
    "batch-norm-kept-after-folding-applied-twice": "Once a batch norm is folded into the conv, replace it "
                                                   "with an identity, or it is applied a second time.",
    "a-model-folded-in-training-mode": "Folding uses the running statistics, which only eval mode uses: put the "
                                       "copy in eval mode.",
}
