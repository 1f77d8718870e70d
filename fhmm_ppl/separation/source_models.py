"""What a separator keeps of one source HMM (``storage.SourceModel``), however it was learnt.

A source trained on its clean audio (``training``) and one learnt on a mixture
(``adaptation``) end the same way: the chain's probabilities, the emission's arrays
(``Emission.source_params``: its means and variances, its states' power spectra, ...) and, where
the options ask for them, the states' NMF dictionaries (``state_nmf``), all read off the source's
frames and its state posteriors on them.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np

from fhmm_ppl import hmm
from fhmm_ppl.models import make_family
from fhmm_ppl.models.fhmm import FHMMParams, make_spec
from fhmm_ppl.separation.state_nmf import state_dictionaries
from fhmm_ppl.separation.storage import SourceModel


def chain_marginals(frames: np.ndarray, params, spec) -> np.ndarray:
    """Posterior state probabilities ``(T, N)`` of a one-chain HMM on its model frames ``(T, D)``."""
    log_lik = spec.family.log_lik(jnp.asarray(frames), params.emission)
    return np.asarray(hmm.posteriors([jnp.log(params.init[0])], [jnp.log(params.trans[0])], log_lik).marginals[0],
                      np.float64)


def keep(params, frames, power, spec, emission, dictionary_size: int, seed: int,
         marginals: Optional[np.ndarray] = None) -> SourceModel:
    """The kept parameters of a fitted one-chain HMM ``params`` (``FHMMParams``) on its model frames
    ``(T, D)`` and STFT power ``(T, F)``; ``marginals (T, N)``: its state posteriors there (``None``:
    computed with ``params`` where needed); ``seed`` seeds the dictionaries' NMF."""
    if marginals is None and (emission.uses_marginals or dictionary_size):
        marginals = chain_marginals(frames, params, spec)
    kept = emission.source_params(params, power, marginals)
    if dictionary_size:
        kept["dictionaries"] = state_dictionaries(marginals, power, kept["psd"], dictionary_size, seed=seed)
    return SourceModel(np.asarray(params.init[0]), np.asarray(params.trans[0]), kept)


#: Frames drawn from each learnt state's complex Gaussian to fit it in another emission's parameters.
DRAWS_PER_STATE = 256


def from_expected_power(emission, init, trans, psd, marginals, power, priors, dictionary_size: int,
                        seed: int) -> SourceModel:
    """A source learnt on a mixture in the complex-Gaussian model, as ``emission``'s source model.

    Adaptation (``separation.adaptation``) learns an unknown source's chain ``init (N,)``,
    ``trans (N, N)`` and state power spectra ``psd (N, F)`` on the mixture, and its posterior
    ``marginals (T, N)`` and expected power ``E[|x_tf|^2 | y]`` ``power (T, F)`` per frame (both
    ``None`` where neither is read: a complex-Gaussian separator without dictionaries). A
    complex-Gaussian separator keeps ``psd`` as it is. Any other emission fits each state to the
    model frames of ``DRAWS_PER_STATE`` STFT frames drawn from ``CN(0, psd_s)`` (its family's M-step
    under ``priors``): moment matching, so that a log-mel state has the mean and the spread that
    the complex-Gaussian state's log-mel frames have. State dictionaries, where asked for, are
    learnt on the expected power of the frames each state holds, as a trained source's are.
    """
    init, trans = np.asarray(init, np.float32), np.asarray(trans, np.float32)
    psd = np.asarray(psd)
    kept = {"psd": psd}
    if emission.family != "complex_gaussian":
        n_states = init.shape[0]
        roles = ("initial", "transition") + tuple(emission.prior_roles)
        priors = {role: prior for role, prior in (priors or {}).items() if role in roles}  # a psd prior was adaptation's
        spec = make_spec((n_states,), make_family(emission.family, **emission.family_options), priors)
        rng = np.random.default_rng(seed)
        shape = (n_states, DRAWS_PER_STATE, psd.shape[1])
        drawn = np.sqrt(psd[:, None, :] / 2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        frames = emission.frames(drawn.reshape(-1, psd.shape[1]))
        owner = np.repeat(np.eye(n_states, dtype=np.float32), DRAWS_PER_STATE, axis=0)  # (N * draws, N)
        stats = spec.family.statistics(jnp.asarray(frames)[None], jnp.asarray(owner)[None])
        start = spec.family.initialise(frames, n_states, seed)
        fitted = FHMMParams((jnp.asarray(init),), (jnp.asarray(trans),), spec.family.m_step(stats, start,
                                                                                             spec.emission_priors))
        kept = {**emission.source_params(fitted, np.abs(drawn.reshape(-1, psd.shape[1])) ** 2, owner), "psd": psd}
    if dictionary_size:
        kept["dictionaries"] = state_dictionaries(np.asarray(marginals, np.float64), np.asarray(power, np.float32),
                                                  psd, dictionary_size, seed=seed)
    return SourceModel(init, trans, kept)
