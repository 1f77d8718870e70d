"""Honest evaluation: splits by recording, stratified by label, grouped where recordings share a room.

``make_splits`` returns train/test index pairs (scikit-learn's stratified and
stratified-group splitters); ``evaluate`` trains a fresh classifier (scaler
included) on each training part and scores its test part, so every test
prediction comes from a model whose scaler and HMMs never saw that recording.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from fhmm_ppl.classification.classifier import ClassifierOptions, HMMClassifier, fit_classifier


def make_splits(labels: Sequence[str], groups: Optional[Sequence[str]] = None, method: Literal["cv", "holdout"] = "cv",
                n_splits: int = 4, test_fraction: float = 0.25, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs over R recordings.

    Args:
        labels: R labels (every split is stratified by them).
        groups: R group names, or None. With groups, no group is in both parts of a split.
        method: ``"cv"`` (``n_splits`` folds; every recording is tested once) or
            ``"holdout"`` (one split with about ``test_fraction`` of the recordings in test).
        seed: shuffling seed.

    Returns:
        list of ``(train_indices, test_indices)`` int arrays.

    Raises:
        ValueError: too few recordings or groups for the split, or a training part missing a class.
    """
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    if method not in ("cv", "holdout"):
        raise ValueError(f"split method must be 'cv' or 'holdout', got {method!r}")
    if groups is not None:
        groups = np.asarray(groups)
        n_groups = len(set(groups.tolist()))
        folds = n_splits if method == "cv" else max(2, int(round(1 / test_fraction)))
        if n_groups < folds:
            raise ValueError(f"{n_groups} groups cannot make {folds} grouped folds; use fewer splits or grouped: false")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # scikit-learn warns when a class has fewer members than folds; such a class is simply not
            # tested in every fold, and a class missing from training is refused below, in our words
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(splitter.split(index, labels, groups))
        splits = splits if method == "cv" else splits[:1]
    elif method == "cv":
        smallest = min(np.sum(labels == c) for c in set(labels.tolist()))
        if smallest < n_splits:
            raise ValueError(f"the smallest class has {smallest} recordings, fewer than n_splits={n_splits}")
        splits = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(index, labels))
    else:
        train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
        splits = [(np.sort(train), np.sort(test))]
    everything = set(labels.tolist())
    for fold, (train, _) in enumerate(splits):
        missing = everything - set(labels[train].tolist())
        if missing:
            raise ValueError(f"fold {fold}: no training recording of class(es) {sorted(missing)}; "
                             "use fewer splits, a different seed, or more recordings of those classes")
    return splits


@dataclass
class Evaluation:
    """Out-of-sample predictions from ``evaluate``.

    Attributes:
        labels: the classes (score-column order).
        tested: ``(M,)`` indices of the recordings that were tested (each once).
        y_true, y_pred: ``(M,)`` their true and predicted labels.
        scores: ``(M, C)`` log-likelihoods under each class model; n_frames: ``(M,)`` frames per recording.
        fold: ``(M,)`` which split tested each recording.
        splits: the ``(train, test)`` index pairs; classifiers: the one trained per split.
    """

    labels: list
    tested: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: np.ndarray
    n_frames: np.ndarray
    fold: np.ndarray
    splits: list = field(default_factory=list)
    classifiers: list = field(default_factory=list)


def evaluate(sequences: Sequence[np.ndarray], labels: Sequence[str], splits: list,
             options: ClassifierOptions = ClassifierOptions(), progress=None) -> Evaluation:
    """Train on each split's training part (scaler and HMMs), predict its test part.

    Args:
        sequences: R unscaled feature sequences ``(T_r, D)``; labels: R labels.
        splits: from ``make_splits``.
        options: classifier options; progress: as in ``fit_classifier``.

    Returns:
        ``Evaluation`` over every tested recording.
    """
    labels = np.asarray(labels, dtype=object)
    classes = sorted(set(labels.tolist()))
    progress_fn = progress or (lambda items, description: items)
    parts: list = []
    classifiers: list[HMMClassifier] = []
    for fold, (train, test) in enumerate(progress_fn(splits, "folds")):
        model = fit_classifier([sequences[i] for i in train], labels[train].tolist(), options)
        scores = model.scores([sequences[i] for i in test])
        classifiers.append(model)
        parts.append((test, model.predict(None, scores), scores, np.full(len(test), fold)))
    tested = np.concatenate([p[0] for p in parts])
    return Evaluation(
        labels=classes,
        tested=tested,
        y_true=labels[tested],
        y_pred=np.concatenate([p[1] for p in parts]),
        scores=np.concatenate([p[2] for p in parts]),
        n_frames=np.array([len(sequences[i]) for i in tested]),
        fold=np.concatenate([p[3] for p in parts]),
        splits=list(splits),
        classifiers=classifiers,
    )
