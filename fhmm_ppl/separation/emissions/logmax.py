"""The log-max (MIXMAX) emission: Gaussian states on log-magnitudes, the louder source wins a bin.

With log-magnitude spectra ``y_f ~= max_k x_{k, f}`` and Gaussian ``x_{k, f} | s_k``, the exact
per-bin likelihood is ``sum_k p_k(y_f) prod_{j != k} Phi_j(y_f)`` (Roweis 2003; Nadas' MIXMAX),
and the posterior probability that source k dominates a bin makes its mask. Each state also
keeps its mean power spectrum on the training audio, for Wiener masks at full STFT resolution.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fhmm_ppl.hmm.emissions import logmax_log_lik, logmax_pair, logmax_pair_terms
from fhmm_ppl.separation.emissions.base import LOG_FLOOR, Emission, state_power_spectra

#: Memory budget of one chunk of per-bin log-max terms when making log-likelihoods.
LOG_LIK_BYTES = 512 * 2**20


class LogMaxParams(NamedTuple):
    """K-tuples of per-state Gaussian ``means`` and ``variances`` ``(N_k, D)`` on the model frames,
    and state power spectra ``psd`` ``(N_k, F)`` (``None`` for models saved without them)."""

    means: tuple
    variances: tuple
    psd: Optional[tuple]


class LogMax(Emission):
    """Log-magnitude frames ``(T, F)``; dominance masks at full STFT resolution."""

    name = "logmax"
    family = "logmax"
    prior_roles = ("means", "covars")
    soft_masks = ("dominance", "wiener", "blend")
    refinable = True
    Params = LogMaxParams

    def frames(self, spectrum: np.ndarray) -> np.ndarray:
        return np.log(np.abs(spectrum) + LOG_FLOOR).astype(np.float32)

    def source_params(self, fitted, power, marginals) -> dict[str, np.ndarray]:
        return {"means": np.asarray(fitted.emission.means[0]), "variances": np.asarray(fitted.emission.covars[0]),
                "psd": state_power_spectra(marginals, power)}

    def log_lik(self, prepared, frames):
        params, scale = prepared
        return log_lik_chunked(frames, params.means, params.variances) * scale

    def with_spectra(self, kept, psd) -> dict[str, np.ndarray]:
        """As ``Emission.with_spectra``, and each state's means move by the change of its spectrum's
        model frame, ``frames(sqrt(psd)) - frames(sqrt(kept["psd"]))``; variances stay as trained."""
        old = np.sqrt(np.asarray(kept["psd"], np.float64))
        shift = self.frames(np.sqrt(np.asarray(psd, np.float64))).astype(np.float64) - self.frames(old)
        return {**super().with_spectra(kept, psd), "means": (np.asarray(kept["means"]) + shift).astype(np.float32)}


_log_lik_any = jax.jit(logmax_log_lik)
_pair_terms = jax.jit(logmax_pair_terms)
_pair = jax.jit(logmax_pair)


def _log_lik_chunk(frames, means, variances):
    """``logmax_log_lik`` of a chunk of frames; two sources as two compiled steps (``logmax_pair``)."""
    if len(means) == 2:
        return _pair(*_pair_terms(frames, means, variances))
    return _log_lik_any(frames, means, variances)


def log_lik_chunked(log_mag, means, variances):
    """``(T, N_1, ..., N_K)`` log-max log-likelihoods of ``log_mag (T, D)``, chunk by chunk of frames so
    that the per-bin ``(frames, prod N, D)`` terms stay within ``LOG_LIK_BYTES``. The loop is in
    Python: XLA-CPU ran the same fused reduction more slowly inside a ``lax.map``."""
    means, variances = tuple(means), tuple(variances)
    n_frames, n_bins = log_mag.shape
    n_joint = math.prod(int(m.shape[0]) for m in means)
    largest = max(16, LOG_LIK_BYTES // (4 * n_joint * n_bins * (len(means) + 1)))
    chunk = -(-n_frames // -(-n_frames // largest))  # equal chunks, as few as fit the budget
    pad = (-n_frames) % chunk
    frames = jnp.pad(log_mag, ((0, pad), (0, 0)))
    parts = [_log_lik_chunk(frames[i: i + chunk], means, variances) for i in range(0, n_frames + pad, chunk)]
    return jnp.concatenate(parts)[:n_frames]
