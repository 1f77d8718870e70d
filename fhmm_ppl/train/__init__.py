"""Training: EM (Baum-Welch with MAP M-step) and SVI (NumPyro + optax)."""

from fhmm_ppl.train.batching import pad_sequences
from fhmm_ppl.train.em import EMResult, fit_em, initial_params
from fhmm_ppl.train.fit import FitResult, fit
from fhmm_ppl.train.svi import SVIResult, fit_svi, make_optimizer

__all__ = ["EMResult", "FitResult", "SVIResult", "fit", "fit_em", "fit_svi", "initial_params", "make_optimizer", "pad_sequences"]
