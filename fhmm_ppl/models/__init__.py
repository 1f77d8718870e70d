"""NumPyro models of factorial HMMs, emission families and the prior registry."""

from fhmm_ppl.models.families import (
    ComplexGaussianFamily,
    ComplexGaussianParams,
    GaussianFamily,
    GaussianParams,
    LogMaxFamily,
    make_family,
)
from fhmm_ppl.models.fhmm import (
    FHMMParams,
    FHMMSpec,
    fhmm_model,
    log_posterior,
    log_prior,
    params_from_sites,
    site_values,
)
from fhmm_ppl.models.priors import NotConjugateError, available_priors, make_prior, register_prior

__all__ = [
    "ComplexGaussianFamily",
    "ComplexGaussianParams",
    "FHMMParams",
    "FHMMSpec",
    "GaussianFamily",
    "GaussianParams",
    "LogMaxFamily",
    "NotConjugateError",
    "available_priors",
    "fhmm_model",
    "log_posterior",
    "log_prior",
    "make_family",
    "make_prior",
    "params_from_sites",
    "register_prior",
    "site_values",
]
