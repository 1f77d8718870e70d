"""Classifying recordings by source type: one HMM per label on MFCC / log-mel frames."""

from fhmm_ppl.classification.classifier import ClassifierOptions, HMMClassifier, features, fit_classifier
from fhmm_ppl.classification.data import LabelledRecordings, demo_recordings, file_recordings, mma_recordings
from fhmm_ppl.classification.evaluation import Evaluation, evaluate, make_splits

__all__ = ["ClassifierOptions", "Evaluation", "HMMClassifier", "LabelledRecordings", "demo_recordings", "evaluate",
           "features", "file_recordings", "fit_classifier", "make_splits", "mma_recordings"]
