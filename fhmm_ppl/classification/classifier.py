"""One HMM per label over frame sequences of features; a recording gets the most likely label.

``features`` turns a recording into MFCC (or log-mel) frames. ``fit_classifier``
fits the feature scaler on the training recordings' frames only, then trains
one Gaussian HMM per label by EM or SVI on that label's scaled sequences.
``HMMClassifier.scores`` gives each recording's log-likelihood under every
label's model (exact forward pass); ``predict`` takes the highest, optionally
adding the log class prior (the training label frequencies).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import jax
import numpy as np
from pydantic import Field, model_validator

from fhmm_ppl.audio.features import Normalizer, STFTConfig, log_mel, mfcc
from fhmm_ppl.models.families import make_family
from fhmm_ppl.models.fhmm import FHMMSpec, make_spec, sequence_log_marginals
from fhmm_ppl.settings import (
    CLASSIFICATION_FEATURES,
    CLASSIFICATION_MODEL,
    ClassificationSettings,
    FeatureSettings,
    ModelSettings,
    TaskOptions,
    check_classification,
)
from fhmm_ppl.train import fit, pad_sequences

#: Flat keyword -> (section, field) for ``ClassifierOptions.from_flat``: every field by its own
#: name, except ``training.method``, which is ``trainer``.
FLAT_KEYS = {
    **{name: ("features", name) for name in FeatureSettings.model_fields},
    **{name: ("model", name) for name in ("n_states", "covariance_type", "priors")},
    **{name: ("training", name) for name in ("max_iter", "svi_steps", "n_init")},
    "trainer": ("training", "method"),
    **{name: ("classification", name) for name in ClassificationSettings.model_fields},
}


class ClassifierOptions(TaskOptions):
    """How recordings are featurised and each label's HMM is built and trained: the experiment
    file's ``features``, ``model``, ``training`` and ``classification`` sections and the seed.

    ``features`` sets the analysis frames (``n_fft``, ``hop_length``; ``n_mels`` bands under the
    MFCCs, at least ``classification.n_features``); ``model`` the Gaussian HMM per label
    (``n_states``, ``covariance_type``, ``priors``); ``training`` how it is trained
    (``fhmm_ppl.train.fit``); ``classification`` the feature kind, scaler and decision rule.
    """

    features: FeatureSettings = Field(default_factory=lambda: FeatureSettings(**CLASSIFICATION_FEATURES))
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(**CLASSIFICATION_MODEL))
    classification: ClassificationSettings = Field(default_factory=ClassificationSettings)

    FLAT_KEYS: ClassVar[dict[str, tuple[str, str]]] = FLAT_KEYS
    KIND: ClassVar[str] = "classifier"

    @model_validator(mode="after")
    def _gaussian(self) -> "ClassifierOptions":
        check_classification(self.model)
        return self

    @property
    def stft(self) -> STFTConfig:
        return STFTConfig(self.features.n_fft, self.features.hop_length)


def features(signal: np.ndarray, sample_rate: int, options: ClassifierOptions = ClassifierOptions()) -> np.ndarray:
    """Feature frames ``(T, classification.n_features)`` of one recording ``(n,)``."""
    kind, n_features = options.classification.features, options.classification.n_features
    if kind == "mfcc":
        return mfcc(signal, sample_rate, options.stft, n_mfcc=n_features, n_mels=max(options.features.n_mels, n_features))
    return log_mel(signal, sample_rate, options.stft, n_mels=n_features)


#: ``(B,)`` log p(sequence | HMM) for a padded batch ``(B, T, D)``, compiled once per shape.
_sequence_log_marginals = jax.jit(sequence_log_marginals, static_argnames=("family",))


@dataclass
class HMMClassifier:
    """Trained per-label HMMs with the scaler they were trained under.

    Attributes:
        labels: the classes, in score-column order.
        models: ``{label: FHMMParams}`` (one chain each); spec: the shared ``FHMMSpec``.
        normalizer: the feature scaler fitted on training frames.
        log_prior: ``(C,)`` log training frequencies (used when ``options.classification.class_priors``).
        history: ``{label: (n_iter,)}`` training objective (EM log posterior, or minus the SVI loss).
    """

    options: ClassifierOptions
    labels: list
    models: dict
    spec: FHMMSpec
    normalizer: Normalizer
    log_prior: np.ndarray
    history: dict = field(default_factory=dict)

    def scores(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Log-likelihoods ``(R, C)`` of R unscaled feature sequences ``(T_r, D)`` under each label's HMM."""
        batch, lengths = pad_sequences([self.normalizer.transform(s) for s in sequences])
        columns = [np.asarray(_sequence_log_marginals(self.models[c], self.spec.family, batch, lengths))
                   for c in self.labels]
        return np.stack(columns, axis=1).astype(np.float64)

    def predict(self, sequences: Sequence[np.ndarray], scores: np.ndarray | None = None) -> np.ndarray:
        """Labels ``(R,)``: the highest score (plus the log class prior when enabled)."""
        scores = self.scores(sequences) if scores is None else scores
        if self.options.classification.class_priors:
            scores = scores + self.log_prior[None, :]
        hopeless = np.flatnonzero(~np.any(np.isfinite(scores), axis=1))
        if hopeless.size:
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
    if len(sequences) != len(labels) or not len(sequences):
        raise ValueError(f"need one label per sequence and at least one sequence, got {len(sequences)} and {len(labels)}")
    progress = progress or (lambda items, description: items)
    classes = sorted(set(labels))
    normalizer = Normalizer(options.classification.scaler).fit(np.concatenate(list(sequences), axis=0))
    scaled = [normalizer.transform(s) for s in sequences]
    model = options.model
    spec = make_spec((model.n_states,), make_family("gaussian", covariance_type=model.covariance_type), model.prior_specs())
    models, history = {}, {}
    for label in progress(classes, "training class models"):
        mine = [s for s, y in zip(scaled, labels) if y == label]
        frames = sum(len(s) for s in mine)
        if frames < model.n_states:
            raise ValueError(f"class {label!r} has {frames} training frames, fewer than {model.n_states} states")
        result = fit(mine, spec, options.training, seed=options.seed)
        models[label], history[label] = result.params, result.history
    counts = np.array([list(labels).count(c) for c in classes], dtype=np.float64)
    return HMMClassifier(options, classes, models, spec, normalizer, np.log(counts / counts.sum()), history)
