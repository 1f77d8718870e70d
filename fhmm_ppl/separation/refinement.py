"""Refinement: the trained sources' state spectra re-estimated on each mixture, anchored at training.

Trained spectra rarely match a recording exactly: its noise is another stretch of the noise (hum
at a slightly other pitch, dishes of other crockery), the talker is louder or in another room.
Refinement moves every trained source's state power spectra towards the mixture by a few
iterations of exact EM in the complex-Gaussian FHMM (the E-step of ``separation.adaptation``:
the joint state posterior and each source's Wiener-posterior expected power), with each
spectrum held near its trained value ``v0`` by a conjugate inverse-gamma prior,
``v_sf ~ InvGamma(tau - 1, tau v0_sf)``, whose mode is ``v0`` and whose weight is ``tau`` frames
of evidence (``inference.refine_strength``). The MAP M-step is then closed form,

    v_sf = (sum_t gamma_t(s) E|x_tf|^2 + tau v0_sf) / (sum_t gamma_t(s) + tau),

the classic MAP adaptation of speaker recognition (Reynolds, Quatieri & Dunn 2000): a state the
mixture visits often follows it, one it rarely visits stays as trained. Chains' probabilities
stay as trained. Each iteration cannot decrease ``log p(y | v) + log p(v)`` (tested).

The E-steps read every ``inference.refine_stride``-th frame, with each chain's transitions taken
that many steps (``A^stride``: the same chain seen at those frames) and the prior's weight divided
by the stride (so it weighs as much against the frames read as ``tau`` does against all of them):
at stride 2 refinement runs twice as fast and separates as well on real speech (docs/benchmarks.md).

The refined spectra reach the separator's emission through ``Emission.with_spectra`` (a log-mel
state's means move by the change of its spectrum's log-mel frame; dictionaries' spectra scale
with it), so what the emission learnt on clean audio (variances, dictionary shapes) is kept.
Measured on real speech in docs/benchmarks.md.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from fhmm_ppl.runtime import padded, run_each
from fhmm_ppl.separation.adaptation import e_step
from fhmm_ppl.separation.averaging import source_indices
from fhmm_ppl.separation.storage import SourceModel
from fhmm_ppl.settings import check_noise_sources


def check_refined(options, names) -> None:
    """One-line ``ValueError`` where ``inference.refine`` names a source not in ``names`` (the
    separator's sources); the default, ``NOISE_SOURCES``, is skipped where it is missing."""
    check_noise_sources("inference.refine", options.inference.refine, names, bool(options.refine_iter))


def inverse_gamma_log_prior(psd, anchor, strength: float):
    """``sum log InvGamma(psd; tau - 1, tau anchor)`` over states and bins (``tau = strength > 1``)."""
    shape, rate = strength - 1.0, strength * anchor
    return jnp.sum(shape * jnp.log(rate) - gammaln(shape) - (shape + 1.0) * jnp.log(psd) - rate / psd)


def refine_spectra(log_init, log_trans, psd, power, length, strength, n_iter: int, chains: tuple):
    """``n_iter`` MAP EM iterations of the state spectra of the chains numbered in ``chains``.

    Args:
        log_init, log_trans: K arrays ``(N_k,)``, ``(N_k, N_k)`` (held fixed).
        psd: K arrays ``(N_k, F)``, the trained spectra: the start and the prior's modes.
        power: ``(T, F)`` mixture STFT power; frames ``t >= length`` are padding.
        strength: ``tau > 1``, the prior's weight in frames.

    Returns:
        ``(psd, objective)``: K arrays ``(N_k, F)`` (refined where ``chains`` says, else as given)
        and ``(n_iter,)`` ``log p(y | psd) + log p(psd)`` before each iteration (the one after the
        last would cost one more E-step, which separating does not need).
    """
    return _program(int(n_iter), tuple(chains))(log_init, log_trans, psd, power, length, strength)


@lru_cache(maxsize=None)
def _program(n_iter: int, chains: tuple):
    """The compiled refinement of one model set (an ensemble's sets run side by side on threads,
    ``runtime.run_each``: one program vmapped over the sets ran on one core, 1.5 times slower)."""

    def run(log_init, log_trans, psd, power, length, strength):
        anchor = tuple(psd)

        def objective(log_marginal, current):
            return log_marginal + sum(inverse_gamma_log_prior(current[k], anchor[k], strength) for k in chains)

        def iteration(current, _):
            log_marginal, stats = e_step(log_init, log_trans, current, power, length, chains, counts=False)
            updated = list(current)
            for k, st in zip(chains, stats):
                updated[k] = (st["sum"] + strength * anchor[k]) / (st["weight"][:, None] + strength)
            return tuple(updated), objective(log_marginal, current)

        return jax.lax.scan(iteration, anchor, None, length=n_iter)

    return jax.jit(run)


def refine_models(members, names, power: np.ndarray, emission, strength: float, n_iter: int,
                  stride: int = 1) -> tuple[list, np.ndarray]:
    """The sources ``names`` of every model set (a list of ``{name: SourceModel}``, the same sources
    in each) refined on a mixture's STFT power ``(T, F)``, the other sources held fixed.

    ``stride``: the E-steps read frames ``0, stride, 2 stride, ...``, with transitions ``A^stride``
    and prior weight ``strength / stride`` (which must exceed 1).

    Returns:
        ``([{name: SourceModel}], objective (n_sets, n_iter))``: every source, the refined ones
        with their spectra in ``emission``'s parameters (``Emission.with_spectra``), and each
        set's objective (on the frames read) before each iteration.
    """
    power = np.asarray(power, np.float32)[::stride]
    n_frames = power.shape[0]
    frames = jnp.asarray(padded(power))
    chains = source_indices(names, list(members[0]))
    program = _program(int(n_iter), chains)

    def one(member):
        """One set refined: ``({name: SourceModel}, objective (n_iter,))``."""
        def read(field):
            return tuple(jnp.asarray(field(s), jnp.float32) for s in member.values())

        psd, objective = program(read(lambda s: np.log(s.init)), read(lambda s: np.log(strided(s.trans, stride))),
                                 read(lambda s: s.emission["psd"]), frames, n_frames, float(strength) / stride)
        refined = {name: SourceModel(s.init, s.trans, emission.with_spectra(s.emission, np.asarray(v))) if k in chains
                   else s for k, ((name, s), v) in enumerate(zip(member.items(), psd))}
        return refined, np.asarray(objective, np.float64)

    results = run_each(one, members)
    return [refined for refined, _ in results], np.stack([objective for _, objective in results])


def strided(trans: np.ndarray, stride: int) -> np.ndarray:
    """A chain's transitions ``(N, N)`` taken ``stride`` steps, ``A^stride``, in float64."""
    return np.linalg.matrix_power(np.asarray(trans, np.float64), int(stride))
