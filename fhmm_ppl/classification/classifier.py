"""One HMM per label over frame sequences of features; a recording gets the most likely label.

``features`` turns a recording into MFCC (or log-mel) frames. ``fit_classifier``
fits the feature scaler on the training recordings' frames only, then trains
one Gaussian HMM per label by EM or SVI on that label's scaled sequences.
``HMMClassifier.scores`` gives each recording's log-likelihood under every
label's model (exact forward pass); ``predict`` takes the highest, optionally
adding the log class prior (the training label frequencies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import jax
import numpy as np

from fhmm_ppl.models.fhmm import sequence_log_marginals


@dataclass(frozen=True)
class ClassifierOptions:
    """How recordings are featurised and each label's HMM is built and trained.

    Attributes:
        features: ``"mfcc"`` or ``"log_mel"``; n_features: coefficients / mel bands (40 as the original study).
        n_fft, hop_length: analysis frames (samples).
        scaler: ``"minmax"`` (the original study's), ``"standard"`` or ``"none"``; fitted on training frames only.
        n_states: states per label's HMM; covariance_type: ``diag``, ``full``, ``tied`` or ``spherical``.
        trainer: ``"em"`` or ``"svi"``; max_iter: EM iterations or SVI steps.
        class_priors: add the log training label frequency to each score.
        priors: role -> ``{"name": registered prior, "params": {...}}`` (``initial``,
            ``transition``, ``means``, ``covars``), as for separation.
        seed: k-means initialisation and SVI seed.
    """

    features: Literal["mfcc", "log_mel"] = "mfcc"
    n_features: int = 40
    n_fft: int = 512
    hop_length: int = 256
    scaler: Literal["minmax", "standard", "none"] = "minmax"
    n_states: int = 4
    covariance_type: str = "diag"
    trainer: Literal["em", "svi"] = "em"
    max_iter: int = 30
    class_priors: bool = False
    priors: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features not in ("mfcc", "log_mel"):
            raise ValueError(f"features must be 'mfcc' or 'log_mel', got {self.features!r}")
        if self.trainer not in ("em", "svi"):
            raise ValueError(f"trainer must be 'em' or 'svi', got {self.trainer!r}")
        if self.n_states < 1 or self.n_features < 1 or self.max_iter < 1:
            raise ValueError("n_states, n_features and max_iter must be positive")


def features(signal: np.ndarray, sample_rate: int, options: ClassifierOptions = ClassifierOptions()) -> np.ndarray:
    """Feature frames ``(T, n_features)`` of one recording ``(n,)``."""
    from fhmm_ppl.audio.features import STFTConfig, log_mel, mfcc

    config = STFTConfig(options.n_fft, options.hop_length)
    if options.features == "mfcc":
        return mfcc(signal, sample_rate, config, n_mfcc=options.n_features, n_mels=max(64, options.n_features))
    return log_mel(signal, sample_rate, config, n_mels=options.n_features)


#: ``(B,)`` log p(sequence | HMM) for a padded batch ``(B, T, D)``, compiled once per shape.
_sequence_log_marginals = jax.jit(sequence_log_marginals, static_argnames=("family",))


@dataclass
class HMMClassifier:
    """Trained per-label HMMs with the scaler they were trained under.

    Attributes:
        labels: the classes, in score-column order.
        models: ``{label: FHMMParams}`` (one chain each); spec: the shared ``FHMMSpec``.
        normalizer: the feature scaler fitted on training frames.
        log_prior: ``(C,)`` log training frequencies (used when ``options.class_priors``).
        history: ``{label: (n_iter,)}`` training objective (EM log posterior, or minus the SVI loss).
    """

    options: ClassifierOptions
    labels: list
    models: dict
    spec: object
    normalizer: object
    log_prior: np.ndarray
    history: dict = field(default_factory=dict)

    def scores(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Log-likelihoods ``(R, C)`` of R unscaled feature sequences ``(T_r, D)`` under each label's HMM."""
        from fhmm_ppl.train.batching import pad_sequences

        batch, lengths = pad_sequences([self.normalizer.transform(s) for s in sequences])
        columns = [np.asarray(_sequence_log_marginals(self.models[c], self.spec.family, batch, lengths))
                   for c in self.labels]
        return np.stack(columns, axis=1).astype(np.float64)

    def predict(self, sequences: Sequence[np.ndarray], scores: np.ndarray | None = None) -> np.ndarray:
        """Labels ``(R,)``: the highest score (plus the log class prior when enabled)."""
        scores = self.scores(sequences) if scores is None else scores
        if self.options.class_priors:
            scores = scores + self.log_prior[None, :]
        hopeless = np.flatnonzero(~np.any(np.isfinite(scores), axis=1))
        if hopeless.size:
            import warnings

            warnings.warn(f"recordings {hopeless.tolist()} have no finite score under any class model (features far "
                          f"outside the training range, or NaN); they are labelled {self.labels[0]!r} by default",
                          RuntimeWarning, stacklevel=2)
        return np.asarray(self.labels, dtype=object)[np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1)]


def fit_classifier(sequences: Sequence[np.ndarray], labels: Sequence[str],
                   options: ClassifierOptions = ClassifierOptions(), progress=None) -> HMMClassifier:
    """Fit the scaler on these (training) sequences, then one HMM per label.

    Args:
        sequences: R feature sequences ``(T_r, D)`` (``features`` of each training recording).
        labels: R labels; every label needs at least one sequence.
        options: see ``ClassifierOptions``.
        progress: wraps an iterable with a progress display, as ``progress(items, description)``.

    Returns:
        ``HMMClassifier``.
    """
    from fhmm_ppl.audio.features import Normalizer
    from fhmm_ppl.models.families import make_family
    from fhmm_ppl.models.fhmm import make_spec
    from fhmm_ppl.train.em import fit_em, initial_params
    from fhmm_ppl.train.svi import fit_svi

    if len(sequences) != len(labels) or not len(sequences):
        raise ValueError(f"need one label per sequence and at least one sequence, got {len(sequences)} and {len(labels)}")
    progress = progress or (lambda items, description: items)
    classes = sorted(set(labels))
    normalizer = Normalizer(options.scaler).fit(np.concatenate(list(sequences), axis=0))
    scaled = [normalizer.transform(s) for s in sequences]
    spec = make_spec((options.n_states,), make_family("gaussian", covariance_type=options.covariance_type), options.priors)
    models, history = {}, {}
    for label in progress(classes, "training class models"):
        mine = [s for s, y in zip(scaled, labels) if y == label]
        frames = sum(len(s) for s in mine)
        if frames < options.n_states:
            raise ValueError(f"class {label!r} has {frames} training frames, fewer than {options.n_states} states")
        if options.trainer == "em":
            result = fit_em(mine, spec, max_iter=options.max_iter, seed=options.seed)
            models[label], history[label] = result.params, result.objective
        else:
            start = initial_params(spec, mine, options.seed)
            result = fit_svi(mine, spec, init=start, n_steps=options.max_iter, seed=options.seed)
            models[label], history[label] = result.params, -result.losses
    counts = np.array([list(labels).count(c) for c in classes], dtype=np.float64)
    return HMMClassifier(options, classes, models, spec, normalizer, np.log(counts / counts.sum()), history)
