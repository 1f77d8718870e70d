"""The emission registry: ``model.emission`` names one of ``EMISSIONS``.

Each emission is one module with a subclass of ``base.Emission`` (its docstring lists what an
emission provides). Adding one is that module plus an entry here, or a call to
``register_emission`` from a user's own code.
"""

from __future__ import annotations

from fhmm_ppl.separation.emissions.base import Emission
from fhmm_ppl.separation.emissions.complex_gaussian import ComplexGaussian
from fhmm_ppl.separation.emissions.log_mel import LogMel
from fhmm_ppl.separation.emissions.logmax import LogMax

EMISSIONS: dict[str, type[Emission]] = {e.name: e for e in (LogMel, ComplexGaussian, LogMax)}


def register_emission(emission: type[Emission]) -> type[Emission]:
    """Add an ``Emission`` subclass under its ``name`` (usable as a class decorator)."""
    if not (isinstance(emission, type) and issubclass(emission, Emission)):
        raise TypeError(f"an emission is a subclass of fhmm_ppl.separation.emissions.Emission, got {emission!r}")
    EMISSIONS[emission.name] = emission
    return emission


def get_emission(name: str) -> type[Emission]:
    """The registered emission class called ``name``."""
    if name not in EMISSIONS:
        raise ValueError(f"unknown emission {name!r}; registered: {', '.join(EMISSIONS)}")
    return EMISSIONS[name]


__all__ = ["EMISSIONS", "Emission", "get_emission", "register_emission"]
