"""The claims the course puts to experiments: every claim the five explainer texts make about batch norm.

``CLAIMS`` is a tuple of ``Claim``s (ids stable, ``CLAIM_IDS`` in the same order; the course's own
copy of the table), each with the explainers that make it, the notebook section that teaches it,
the experiments that decide it (``Check``: an import path ``"module:function"`` under
``bncourse.experiments``, optionally restricted to the rules on some metrics when one experiment
decides several claims), its ``kind``, what the literature found and the verdict that finding
implies, and the data set the experiment uses.

    get_claim("scale-invariance").checks    # (Check("invariance:scale_invariance"),)

Each claim declares its ``kind``: ``experiment`` (trained or sampled over seeds, decided by a rule
that weighs an effect against its seed-to-seed spread), ``demonstration`` (one computation: algebra,
an API fact, a count, a construction; shown without a spread) or both (``experiment +
demonstration``). Deciding a claim is ``claims_verdicts``; running the table is ``claims.run_claims``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Check:
    """One experiment behind a claim: ``"module:function"``, and which of its rules decide it.

    ``metrics``: only the rules on these metrics count for this claim (None: all of them).
    """

    path: str
    metrics: tuple[str, ...] | None = None


EXPERIMENT_KIND, DEMONSTRATION_KIND, BOTH_KINDS = "experiment", "demonstration", "experiment + demonstration"


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    sources: str  # the explainers (000-004) that make it; in parentheses: implied
    notebook: str  # where the course teaches it (the lead may point a claim to a newer notebook here)
    checks: tuple[Check, ...] = ()
    untested: str = ""  # why no experiment answers it here (only when checks is empty)
    kind: str = EXPERIMENT_KIND  # experiment, demonstration or both: checked against the results' kinds
    literature: str = ""  # what the literature found, with the source
    literature_verdict: str = ""  # "held", "contradicted" or "mixed": the verdict the literature implies
    data: str = ""  # the data set the experiment uses, and why that one


NB5, NB6, NB7 = "5 Figure 1", "6 CNNs", "7 What batch norm really does"

CLAIMS: tuple[Claim, ...] = (
    Claim("ics-reduced", "batch norm reduces internal covariate shift: a layer's input distribution drifts less "
          "during training", "000 001 002 003 004", f"{NB7} §1; {NB5} (Figure 1 b, c)",
          (Check("optimization:internal_covariate_shift"),)),
    Claim("ics-is-why", "that reduction is why batch norm helps; each layer can learn more independently of the "
          "others", "000 002 003 (001)", f"{NB7} §2-3", (Check("ics_why:noisy_batchnorm_tuned"),)),
    Claim("faster-convergence", "training reaches a given accuracy in fewer steps", "all", f"{NB7} §4; {NB5}",
          (Check("learning_rates:learning_rates", ("steps_to_target",)),)),
    Claim("higher-learning-rates", "larger learning rates can be used without divergence", "all", f"{NB7} §4; {NB5}",
          (Check("learning_rates:learning_rates", ("log10_largest_stable_lr",)),)),
    Claim("regularizes", "it regularizes: less overfitting, better generalization (smaller train-test gap)", "all",
          f"{NB7} §5", (Check("generalization:regularization"),)),
    Claim("noise-like-dropout", "an example's output depends on its batch-mates; this noise acts like dropout; batch "
          "norm is used with (or instead of) dropout", "000 001 002 003", f"{NB7} §5",
          (Check("generalization:batch_noise"), Check("generalization:regularization", ("gap",)))),
    Claim("init-insensitive", "training is less sensitive to the weight initialization", "000 001 002 003",
          f"11 Inside the network (per layer); {NB5} (initialization sweep)", (Check("inside:init_insensitive"),)),
    Claim("deeper-networks", "deeper networks become trainable", "001 003 004", f"{NB7} §6",
          (Check("depth:depth"),)),
    Claim("stable-gradients", "fewer exploding or vanishing gradients; training is more stable", "000 002 003 004",
          f"11 Inside the network (per layer); {NB7} §6", (Check("inside:stable_gradients"),)),
    Claim("scale-invariance", "a layer's output and gradients do not depend on the scale of its weights (Ioffe & "
          "Szegedy, section 3.3)", "004", f"{NB7} §7", (Check("invariance:scale_invariance"),)),
    Claim("hyperparameter-robust", "hyperparameter tuning becomes less sensitive", "004", f"{NB7} §4 (related)",
          (Check("sensitivity:hyperparameter_robustness"),)),
    Claim("output-mean0-std1", "the layer's outputs have mean 0 and standard deviation 1 (true of x_hat in training "
          "mode; gamma and beta can undo it)", "000 001 003", "2 Batch norm forward",
          (Check("layer:output_statistics"),)),
    Claim("bounded-activations", "no activation can be too high or too low after batch norm", "003",
          "2 Batch norm forward", (Check("layer:bounded_activations"),)),
    Claim("inference-consistent", "with moving averages, inference is deterministic and consistent with training",
          "000 001 002 003", f"{NB6} (train/eval lab)", (Check("layer:inference_consistency"),)),
    Claim("needs-batch-gt-1", "training mode needs more than one example per batch", "000",
          f"2 Batch norm forward; {NB6} (train/eval lab)", (Check("layer:batch_of_one"),)),
    Claim("small-batches-unstable", "small batches give poor estimates of the statistics and unstable training",
          "001", f"{NB6} (train/eval lab)", (Check("batches:small_batches"),)),
    Claim("overhead", "batch norm costs computation and extra parameters (in training; at inference it can be "
          "folded away)", "001", f"4 Batch norm in PyTorch; {NB6}", (Check("overhead:overhead"),)),
    Claim("sequences-hard", "batch norm is hard to apply to recurrent networks and sequence data", "001",
          f"{NB7} §8", (Check("misstatements:padding_in_sequences"),)),
    Claim("before-after-activation", "it is placed before the activation (some place it after) and this matters",
          "000 001 003 004", f"{NB6}", (Check("architecture:before_after_activation"),)),
    Claim("cnn-per-channel", "it is especially effective in CNNs, where it normalizes each channel over the batch "
          "and the spatial positions", "000 002 003", f"3 Batch norm backward (spatial); {NB6}",
          (Check("architecture:cnn_per_channel"),)),
    Claim("not-supervised", "misstatement: \"batch norm is a supervised learning method\" (its statistics never see "
          "a label)", "000 003", f"{NB7} §8", (Check("misstatements:shuffled_labels"),)),
    Claim("dropout-rate", "misstatement: batch norm \"reduces the dropout rate\" and so increases precision",
          "000 003", f"{NB7} §8", (Check("misstatements:dropout_rate"),)),
    Claim("standardized-is-normal", "misstatement: after standardization \"each data point has a normal "
          "distribution\" (standardizing changes location and scale, not shape)", "004", f"1 Why normalize?; {NB7} §8",
          (Check("misstatements:skew_survives_standardization"),)),
    Claim("nlp-standard", "batch norm is a standard tool in NLP and machine translation (layer norm is what "
          "transformers use)", "000 003", f"{NB7} §8",
          (Check("misstatements:transformer_norms"),)),
)

# What the literature found, per claim: (the finding with its source, the verdict it implies).
LITERATURE: dict[str, tuple[str, str]] = {
    "ics-reduced": ("Santurkar et al. 2018 (How does batch normalization help optimization?): measured as the change "
                    "of a layer's gradient when the layers below update, batch norm does not reduce internal covariate "
                    "shift; in their VGG and deep linear networks it was as large or larger with batch norm",
                    "contradicted"),
    "ics-is-why": ("Santurkar et al. 2018: batch norm followed by random noise that makes the layer inputs shift trains "
                   "about as fast as batch norm, so a steadier input distribution is not why it helps", "contradicted"),
    "faster-convergence": ("Ioffe & Szegedy 2015: Inception reached its accuracy in 14x fewer steps; Bjorck et al. 2018: "
                           "the speed-up comes through the larger learning rates batch norm allows", "held"),
    "higher-learning-rates": ("Bjorck et al. 2018 (Understanding batch normalization): batch norm allows much larger "
                              "learning rates without divergence, the main source of its benefit", "held"),
    "regularizes": ("Luo et al. 2019 (Towards understanding regularization in batch normalization): the noise of the "
                    "batch statistics regularizes; Bjorck et al. 2018: better generalization comes mostly through the "
                    "larger learning rates", "held"),
    "noise-like-dropout": ("Luo et al. 2019: batch norm's noise regularizes like dropout in some settings; Ioffe & "
                           "Szegedy 2015 reduced or removed dropout in batch-norm Inception", "held"),
    "init-insensitive": ("Ioffe & Szegedy 2015 claim it; Yang et al. 2019 (A mean field theory of batch "
                         "normalization): deep batch-norm networks have exploding gradients at initialization whatever "
                         "the weight scale, so insensitivity to the scale does not mean trainability", "mixed"),
    "deeper-networks": ("Yang et al. 2019: without skip connections, gradients explode with depth at initialization "
                        "in batch-norm networks, limiting the trainable depth; deep ResNets pair batch norm with skip "
                        "connections", "mixed"),
    "stable-gradients": ("Yang et al. 2019: batch norm itself causes gradient explosion at initialization in deep "
                         "networks; Santurkar et al. 2018: gradients are more predictive (smoother loss) during "
                         "training", "mixed"),
    "scale-invariance": ("Ioffe & Szegedy 2015, section 3.3: BN(aWu) = BN(Wu), and the gradient with respect to W "
                         "scales as 1/a (algebra)", "held"),
    "hyperparameter-robust": ("Bjorck et al. 2018 and Santurkar et al. 2018: a wider range of learning rates trains "
                              "well with batch norm", "held"),
    "output-mean0-std1": ("Ioffe & Szegedy 2015: x_hat has mean 0 and variance 1 over the batch; the layer's output "
                          "gamma * x_hat + beta is free to have any mean and scale", "contradicted"),
    "bounded-activations": ("no study claims a bound; Ioffe 2017 (batch renormalization): in eval mode the moving "
                            "averages can differ from the batch statistics, so activations are not held in a range",
                            "contradicted"),
    "inference-consistent": ("Ioffe 2017: with small or non-i.i.d. batches the moving averages differ from the batch "
                             "statistics used in training, and inference departs from training", "mixed"),
    "needs-batch-gt-1": ("Ioffe & Szegedy 2015: the statistics are over the mini-batch; Wu & He 2018: batch norm "
                         "degrades as the batch shrinks to 2 images per device", "held"),
    "small-batches-unstable": ("Wu & He 2018 (Group normalization): ResNet-50 error 23.6% at 32 images per GPU, 34.7% "
                               "at 2; group norm stays near 24%", "held"),
    "overhead": ("Ioffe & Szegedy 2015: two parameters per channel and the statistics in training; folding into the "
                 "preceding layer removes it at inference (standard practice)", "held"),
    "sequences-hard": ("Ba et al. 2016 (Layer normalization): batch norm is hard to apply to recurrent networks and "
                       "variable-length sequences; Cooijmans et al. 2016 made it work with per-time-step statistics",
                       "held"),
    "before-after-activation": ("Ioffe & Szegedy 2015 put it before the nonlinearity; later reports differ and no "
                                "study settles a general rule", "mixed"),
    "cnn-per-channel": ("Ioffe & Szegedy 2015, section 3.2: one mean and variance per feature map, over the batch and "
                        "the locations; its large gains were on CNNs (Inception)", "held"),
    "not-supervised": ("Ioffe & Szegedy 2015: the statistics are computed from the layer inputs only; no label "
                       "enters", "contradicted"),
    "dropout-rate": ("Ioffe & Szegedy 2015 *chose* to reduce or remove dropout with batch norm; the rate is a "
                     "hyperparameter the layer does not change", "contradicted"),
    "standardized-is-normal": ("standardization is an affine map: it keeps a distribution's shape (skewness, "
                               "kurtosis)", "contradicted"),
    "nlp-standard": ("Ba et al. 2016 and Vaswani et al. 2017 use layer norm; Shen et al. 2020 (PowerNorm) found batch "
                     "norm degrades transformers in NLP", "contradicted"),
}

# What kind of evidence decides each claim (see the module docstring).
KIND: dict[str, str] = {
    "output-mean0-std1": EXPERIMENT_KIND, "scale-invariance": DEMONSTRATION_KIND, "inference-consistent": BOTH_KINDS,
    "needs-batch-gt-1": BOTH_KINDS, "sequences-hard": BOTH_KINDS, "cnn-per-channel": BOTH_KINDS,
    "not-supervised": DEMONSTRATION_KIND, "dropout-rate": DEMONSTRATION_KIND, "nlp-standard": DEMONSTRATION_KIND,
    "standardized-is-normal": DEMONSTRATION_KIND,  # algebra: an affine map keeps a distribution's shape
}

# The checks that replaced a construction shown as an experiment (issue 22).
CHECKS: dict[str, tuple[Check, ...]] = {
    "noise-like-dropout": (Check("generalization:like_dropout"), Check("generalization:batch_noise")),
    "needs-batch-gt-1": (Check("layer:batch_of_one_api"), Check("layer:batch_of_one")),
    "sequences-hard": (Check("misstatements:padding_in_sequences"), Check("misstatements:trained_sequences")),
    "cnn-per-channel": (Check("architecture:per_channel_formula"), Check("architecture:cnn_per_channel")),
    "inference-consistent": (Check("layer:eval_determinism"), Check("layer:inference_consistency")),
}

# The data set behind each claim, and why that one (issue 22: MNIST-1D wherever the digits saturate).
DATA: dict[str, str] = {
    'ics-reduced': "scikit-learn's digits: a measurement of what one SGD step does to the layers' inputs and gradients at one shared rate, not an accuracy comparison, so saturation does not decide it",
    'ics-is-why': 'MNIST-1D: on the digits the deep MLP learns about equally well with and without batch norm (no benefit to explain); on MNIST-1D it stays far below saturation',
    'faster-convergence': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'higher-learning-rates': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'regularizes': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ), a 400-example training set so that it overfits",
    'noise-like-dropout': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'init-insensitive': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'deeper-networks': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'stable-gradients': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'scale-invariance': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (inputs to one layer)",
    'hyperparameter-robust': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'output-mean0-std1': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (a trained MLP's layer outputs)",
    'bounded-activations': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (a trained MLP, test inputs shifted)",
    'inference-consistent': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'needs-batch-gt-1': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) as 8x8 images",
    'small-batches-unstable': "harder digits as 8x8 images with shifts (notebook 9's task)",
    'overhead': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (timing only)",
    'sequences-hard': 'generated sequences of variable length (a sequence task by construction)',
    'before-after-activation': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'cnn-per-channel': 'MNIST-1D: on 64 pixels a CNN and an MLP reach similar accuracies; MNIST-1D was made so that they differ',
    'not-supervised': 'harder digits (one batch; a demonstration)',
    'dropout-rate': 'random activations (a demonstration)',
    'standardized-is-normal': 'samples from an exponential and a normal distribution',
    'nlp-standard': 'none (a count of layers in nn.Transformer)',
}

CLAIMS = tuple(replace(c, kind=KIND.get(c.id, EXPERIMENT_KIND), literature=LITERATURE[c.id][0],
                       literature_verdict=LITERATURE[c.id][1], checks=CHECKS.get(c.id, c.checks), data=DATA[c.id])
               for c in CLAIMS)
CLAIM_IDS = tuple(c.id for c in CLAIMS)


def get_claim(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; the ids are: {', '.join(CLAIM_IDS)}")
