"""The complex-Gaussian (Itakura-Saito) emission: each state a power spectrum, sources add in power.

The mixture STFT is ``y_tf ~ CN(0, sum_k v_{k, s_k}(f))``, so the frame log-likelihood of every
joint state is one product of the mixture's power with ``1 / V`` plus a constant per state
(``hmm.emissions.complex_gaussian_log_lik``). Its structured mean field is linear in the number
of sources (a tangent bound on ``log V`` and a Jensen bound on ``1 / V``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fhmm_ppl import hmm
from fhmm_ppl.hmm.emissions import (
    complex_gaussian_expected_log_lik,
    complex_gaussian_log_lik,
    complex_gaussian_log_lik_from_terms,
    complex_gaussian_terms,
)
from fhmm_ppl.separation.emissions.base import Emission

#: Coordinate-ascent sweeps of structured mean field.
MEAN_FIELD_SWEEPS = 20


class ComplexGaussianParams(NamedTuple):
    """K power spectra ``(N_k, F)``, one per state of each source."""

    psd: tuple


class ComplexGaussian(Emission):
    """STFT power frames; states are power spectra (Wiener masks; mean field for many sources)."""

    name = "complex_gaussian"
    family = "complex_gaussian"
    prior_roles = ("psd",)
    soft_masks = ("wiener",)
    mean_field = True
    uses_marginals = False
    refinable = True
    Params = ComplexGaussianParams

    def frames(self, spectrum: np.ndarray) -> np.ndarray:
        return (np.abs(spectrum) ** 2).astype(np.float32)

    def source_params(self, fitted, power, marginals) -> dict[str, np.ndarray]:
        return {"psd": np.asarray(fitted.emission.psd[0])}

    def prepare(self, params: ComplexGaussianParams, scale: float):
        # -scale / V and the scaled log-normaliser do not depend on the mixture
        return _terms(params.psd, scale), tuple(int(p.shape[0]) for p in params.psd)

    def log_lik(self, prepared, frames):
        terms, n_states = prepared
        return _log_lik(terms, frames, n_states)

    def mean_field_marginals(self, log_init, log_trans, params: ComplexGaussianParams, frames, scale: float,
                             length=None):
        """Per-source state marginals K x ``(T, N_k)`` from structured mean field; frames ``t >= length``
        are padding (see ``hmm.structured_mean_field``)."""
        return _mean_field_marginals(log_init, log_trans, params.psd, frames, scale, length)


_terms = jax.jit(complex_gaussian_terms)


@jax.jit
def _informed_marginals(log_init, log_trans, psd, power, scale, length):
    """Where mean field starts: each chain smoothed on its own on the mixture's power ``(T, F)``, the
    other sources held at their mean spectra under their chains' long-run state occupancy.

    The bound that keeps the updates linear in K is tight only for peaked marginals; from random
    ones it can settle where a quiet source (speech) is silent throughout.
    """
    means = []
    for li, lt, v in zip(log_init, log_trans, psd):
        trans = jnp.exp(lt)
        occupancy = jax.lax.fori_loop(0, 64, lambda _, p: p @ trans, jnp.exp(li))
        means.append(occupancy @ v)  # (F,)
    out = []
    for k, (li, lt, v) in enumerate(zip(log_init, log_trans, psd)):
        var = v + sum(m for j, m in enumerate(means) if j != k)  # (N_k, F): this source plus the others' means
        log_lik = complex_gaussian_log_lik(power, (var,)) * scale
        out.append(hmm.posteriors((li,), (lt,), log_lik, length).marginals[0])
    return tuple(out)


def _scaled_expected_log_lik(data, marginals, k):
    """``complex_gaussian_expected_log_lik`` times a scale; ``data = (power, psd, scale)``."""
    power, psd, scale = data
    return complex_gaussian_expected_log_lik((power, psd), marginals, k) * scale


@jax.jit
def _mean_field_marginals(log_init, log_trans, psd, power, scale, length):
    start = _informed_marginals(log_init, log_trans, psd, power, scale, length)
    return hmm.structured_mean_field(log_init, log_trans, expected_log_lik=_scaled_expected_log_lik,
                                     data=(power, psd, scale), n_iter=MEAN_FIELD_SWEEPS, init_marginals=start,
                                     length=length).marginals


@jax.jit(static_argnames=("n_states",))
def _log_lik(terms, power, n_states: tuple):
    """Scaled log-likelihoods ``(T, N_1, ..., N_K)``. Kept a compiled step of its own, apart from the
    smoother and the masks: XLA-CPU ran them slower fused into one program."""
    return complex_gaussian_log_lik_from_terms(power, terms).reshape((power.shape[0],) + n_states)
