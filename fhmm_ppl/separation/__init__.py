"""Supervised source separation with factorial HMMs."""

from fhmm_ppl.separation.separator import Separator, SeparatorOptions, SourceModel, fit_separator, load

__all__ = ["Separator", "SeparatorOptions", "SourceModel", "fit_separator", "load"]
