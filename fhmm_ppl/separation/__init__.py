"""Supervised FHMM separation as parts: emissions, posterior, masks, a short pipeline, storage."""

from fhmm_ppl.separation.emissions import EMISSIONS, Emission, register_emission
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.separation.separator import Separator, load
from fhmm_ppl.separation.storage import SourceModel
from fhmm_ppl.separation.training import fit_separator

__all__ = ["EMISSIONS", "Emission", "Separator", "SeparatorOptions", "SourceModel", "fit_separator", "load",
           "register_emission"]
