"""Semi-supervised separation: the unknown sources' HMMs learnt on the mixture itself.

A separator trained on some sources' clean audio (the *known* chains) meets a mixture with a
source it has never heard (the *unknown* chains: noise, say). Adaptation fits the unknown chains'
initial, transition and power-spectrum parameters on that mixture by generalised EM on the FHMM
marginal, ``log p(y | theta) + log p(theta_unknown)``, with the known chains' parameters held
fixed: the NumPyro FHMM of ``models.fhmm`` with the known sites conditioned, maximised exactly.

With the source STFTs ``x_k`` as latent variables beside the
states (``y = sum_k x_k``, ``x_k | s_k ~ CN(0, v_{k, s_k})``), the E-step is exact: the joint
state posterior ``gamma_t(s)`` (``hmm.posteriors``), and given a joint state the Wiener
posterior of each source, ``x_k | y, s ~ CN(v_k / V y, v_k (1 - v_k / V))`` with ``V = sum_j v_j``,
so ``E|x_k|^2 = (v_k / V)^2 |y|^2 + v_k (1 - v_k / V)``. The M-step is the one-chain EM M-step
on those expected powers (``ComplexGaussianFamily.m_step``: the posterior-weighted mean, or the
prior's MAP update) and on the chain's expected initial and transition counts (Dirichlet MAP).
Each iteration therefore cannot decrease the objective (a decrease is warned about and recorded,
as in ``train.em``). The expectations are sums over frames and joint states done as one product
``gamma^T |y|^2`` ``(prod N, F)``: nothing of size ``T x prod N x F`` is made.

Unknown chains start from the mixture, never from the unknown source's audio, in two stages.
First each unknown source is one stationary state, started at the mixture's mean spectrum times
``INIT_SCALE`` (the mixture holds the known sources too), fitted by ``STATIONARY_ITER`` EM
iterations; then its ``n_states`` states start from k-means of the log of its posterior expected
power per frame under that fit (``unknown_posteriors``), with uniform initial and transition rows,
and EM runs ``n_iter`` iterations. Started from k-means of the mixture itself, the unknown states
take the known sources' loudest frames and keep them. Adaptation uses the unscaled likelihood (the objective the known chains were trained on), not the
separating evidence scale.

Adaptation runs in the complex-Gaussian model whatever the separator's emission: every emission
keeps each state's power spectrum (``psd``), which is all the known chains contribute. A
separator with another emission (log-mel, say) then gets each unknown source in its own
parameters, fitted to that source's expected power per frame under its learnt chain
(``source_models.from_expected_power``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fhmm_ppl import hmm
from fhmm_ppl.hmm.emissions import complex_gaussian_log_lik, joint_sum
from fhmm_ppl.models import make_family
from fhmm_ppl.models.families import ComplexGaussianParams
from fhmm_ppl.models.fhmm import FHMMParams, FHMMSpec, log_prior, make_spec
from fhmm_ppl.models.priors import map_update
from fhmm_ppl.runtime import padded
from fhmm_ppl.separation.emissions import EMISSIONS
from fhmm_ppl.separation.source_models import from_expected_power
from fhmm_ppl.separation.storage import SourceModel
from fhmm_ppl.train.em import rounding_slack

#: Factor on the mixture's mean spectrum that starts an unknown source's stationary stage.
INIT_SCALE = 0.5
#: EM iterations of the stationary (one-state) stage.
STATIONARY_ITER = 10
#: Expected visits below which an unknown state keeps its spectrum (no frame speaks for a new one).
UNVISITED = 1e-6


@dataclass(frozen=True)
class Adaptation:
    """What a semi-supervised separator learns on each mixture.

    Attributes:
        unknown: names of the sources learnt on the mixture (after the known ones, in this order).
        n_states: states per unknown source.
        n_iter: EM iterations on a mixture.
    """

    unknown: tuple[str, ...]
    n_states: int
    n_iter: int = 30

    def to_json(self) -> dict:
        return {**asdict(self), "unknown": list(self.unknown)}

    @classmethod
    def from_json(cls, saved: Mapping) -> "Adaptation":
        return cls(tuple(saved["unknown"]), int(saved["n_states"]), int(saved["n_iter"]))


class AdaptationResult(NamedTuple):
    """Outcome of ``adapt_models``.

    Attributes:
        models: ``{name: SourceModel}`` every source, known ones (the same objects) then unknown ones.
        objective: ``(n_iter + 1,)`` ``log p(y | theta) + log p(theta_unknown)`` before each
            iteration and after the last.
        decreases: ``(iteration, amount)`` for every decrease beyond float32 rounding.
    """

    models: dict
    objective: np.ndarray
    decreases: list


def check_adaptable(emission_name: str, known: Sequence[str], adaptation: Adaptation) -> None:
    """One-line ``ValueError`` unless ``adaptation`` suits a separator of the ``known`` sources."""
    if not getattr(EMISSIONS.get(emission_name), "adaptable", False):
        adaptable = [name for name, kind in EMISSIONS.items() if kind.adaptable]
        raise ValueError(f"semi-supervised adaptation (unknown sources) is available for the {', '.join(adaptable)} "
                         f"emissions, not {emission_name}")
    names = list(adaptation.unknown)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"unknown must name distinct sources, got {names}")
    clash = sorted(set(names) & set(known))
    if clash:
        raise ValueError(f"source(s) {clash} are both given training audio and named unknown; name each once")
    if not known:
        raise ValueError("semi-supervised separation needs at least one source with training audio")
    if adaptation.n_states < 1 or adaptation.n_iter < 1:
        raise ValueError(f"unknown sources need n_states >= 1 and n_iter >= 1, got {adaptation.n_states} "
                         f"and {adaptation.n_iter}")


def unknown_spec(n_states: int, priors: Optional[Mapping] = None) -> FHMMSpec:
    """The one-chain spec of an unknown source: the complex-Gaussian family and the priors of
    unknown sources (``ModelSettings.unknown_prior_specs()``; a ``shared_shape`` prior on ``psd``, say)."""
    return make_spec((n_states,), make_family("complex_gaussian"), priors)


def initial_params(power: np.ndarray, spec: FHMMSpec, seed: int, scale: float = 1.0) -> tuple:
    """``(init (N,), trans (N, N), psd (N, F))`` started from power frames ``(T, F)``: k-means spectra
    (``ComplexGaussianFamily.initialise``) times ``scale`` as the spectra prior's M-step with unit
    weights keeps them, uniform initial and transition rows."""
    n = spec.n_states[0]
    psd = jnp.asarray(spec.family.initialise(power, n, seed).psd[0], jnp.float32) * scale
    # through the M-step with unit weights, so that the start obeys what the prior imposes (a shared
    # shape, say) and the first M-step cannot lower the objective by projecting onto it
    psd = spec.family.m_step({"weight": jnp.ones(n, jnp.float32), "sum": psd}, None, spec.emission_priors).psd[0]
    return jnp.full(n, 1.0 / n, jnp.float32), jnp.full((n, n), 1.0 / n, jnp.float32), psd


def _broadcast_chain(values, k: int, n_states: tuple) -> jax.Array:
    """Chain ``k``'s per-state rows ``(N_k, F)`` spread over the joint states: ``(prod N, F)``."""
    shape = [1] * len(n_states) + [values.shape[-1]]
    shape[k] = n_states[k]
    return jnp.broadcast_to(values.reshape(shape), n_states + (values.shape[-1],)).reshape(-1, values.shape[-1])


@partial(jax.jit, static_argnames=("unknown", "counts"))
def e_step(log_init, log_trans, psd, power, length, unknown: tuple, counts: bool = True):
    """Exact E-step on a mixture's power ``power (T, F)`` (frames ``t >= length`` are padding).

    Args:
        log_init, log_trans: K arrays ``(N_k,)``, ``(N_k, N_k)``; psd: K arrays ``(N_k, F)``.
        unknown: indices of the chains to update.
        counts: also the chains' expected transitions (``first`` and ``counts`` below; refinement,
            which keeps the trained chains' probabilities, skips them).

    Returns:
        ``(log p(y), stats)``: per unknown chain a dict of ``first (N,)`` (state posterior at the
        first frame), ``counts (N, N)`` (expected transitions), ``weight (N,)`` (expected visits)
        and ``sum (N, F)`` (expected source power per state, summed over frames).
    """
    n_frames, n_bins = power.shape
    n_states = tuple(v.shape[0] for v in psd)
    log_lik = complex_gaussian_log_lik(power, psd)
    post = hmm.posteriors(log_init, log_trans, log_lik, length, trans_counts=counts, joint=True)
    valid = (jnp.arange(n_frames) < length)[:, None]
    joint = post.joint.reshape((n_frames,) + n_states) * valid.reshape((n_frames,) + (1,) * len(n_states))
    stats = []
    for k in unknown:
        # chain k's states first, the others' joint states second, so that summing over the others is
        # a reduction over the middle axis: over the leading one it ran 3.7 times slower at F = 1025
        others = [j for j in range(len(n_states)) if j != k]
        gamma = jnp.transpose(joint, (0, 1 + k, *(1 + j for j in others))).reshape(n_frames, -1)  # (T, P)
        weighted_power = (gamma.T @ power).reshape(n_states[k], -1, n_bins)  # sum_t gamma_t(s) |y_t|^2
        occupancy = gamma.sum(axis=0).reshape(n_states[k], -1, 1)
        rest = joint_sum([psd[j] for j in others]).reshape(1, -1, n_bins) if others else 0.0
        own = psd[k][:, None, :]
        share = own / (own + rest)  # (N_k, P / N_k, F)
        per_state = (share**2 * weighted_power + occupancy * own * (1.0 - share)).sum(axis=1)
        stats.append({"weight": (post.marginals[k] * valid).sum(axis=0), "sum": per_state}
                     | ({"first": post.marginals[k][0], "counts": post.trans_counts[k]} if counts else {}))
    return post.log_marginal, tuple(stats)


@partial(jax.jit, static_argnames=("unknown",))
def unknown_posteriors(log_init, log_trans, psd, power, length, unknown: tuple):
    """Per unknown chain, its state marginals ``(T, N)`` and its posterior expected power per frame,
    ``E[|x_tf|^2 | y]`` ``(T, F)`` (arguments as ``e_step``'s): where the second stage of adaptation
    starts its states, and what a source learnt on the mixture is expressed from."""
    n_states = tuple(v.shape[0] for v in psd)
    post = hmm.posteriors(log_init, log_trans, complex_gaussian_log_lik(power, psd), length, joint=True)
    gamma = post.joint.reshape(power.shape[0], -1)  # (T, P)
    total = joint_sum(psd).reshape(-1, power.shape[1])
    out = []
    for k in unknown:
        own = _broadcast_chain(psd[k], k, n_states)
        share = own / total
        out.append((post.marginals[k], (gamma @ share**2) * power + gamma @ (own * (1.0 - share))))
    return tuple(out)


@partial(jax.jit, static_argnames=("spec",))
def m_step(stats: Mapping, psd, spec: FHMMSpec):
    """One unknown chain's MAP M-step from ``e_step``'s stats: ``(init (N,), trans (N, N), psd (N, F))``;
    states no frame visits keep their spectra ``psd``."""
    init = map_update(spec.initial_prior, "initial", counts=stats["first"])
    trans = map_update(spec.transition_prior, "transition", counts=stats["counts"])
    fitted = spec.family.m_step({"weight": stats["weight"], "sum": stats["sum"]}, None, spec.emission_priors).psd[0]
    return init, trans, jnp.where((stats["weight"] < UNVISITED)[:, None], psd, fitted)


@partial(jax.jit, static_argnames=("spec",))
def unknown_log_prior(init, trans, psd, spec: FHMMSpec):
    """``log p(theta)`` of one unknown chain under ``spec``'s priors (the NumPyro model's)."""
    return log_prior(FHMMParams((init,), (trans,), ComplexGaussianParams((psd,))), spec, psd.shape[1])


class _Fixed(NamedTuple):
    """The known chains as device arrays: K_known arrays each of log initial, log transition, psd."""

    log_init: tuple
    log_trans: tuple
    psd: tuple


def run_em(fixed: _Fixed, params: list, power, n_frames: int, n_iter: int, spec: FHMMSpec):
    """``n_iter`` generalised EM iterations of the unknown chains' ``params`` (``(init, trans, psd)``
    each) on padded power frames; returns ``(params, objective (n_iter + 1,), decreases)``."""
    chains = tuple(range(len(fixed.psd), len(fixed.psd) + len(params)))
    objective, decreases = [], []
    for iteration in range(n_iter + 1):
        log_marg, stats = e_step(fixed.log_init + tuple(jnp.log(p[0]) for p in params),
                                 fixed.log_trans + tuple(jnp.log(p[1]) for p in params),
                                 fixed.psd + tuple(p[2] for p in params), power, n_frames, chains)
        value = float(log_marg) + sum(float(unknown_log_prior(*p, spec)) for p in params)
        if not np.isfinite(value):
            raise FloatingPointError(f"adaptation objective became {value} at iteration {iteration}; "
                                     "check the mixture for NaN/inf or silence")
        if objective and value - objective[-1] < -rounding_slack(value, n_frames * power.shape[1]):
            decreases.append((iteration, objective[-1] - value))
            warnings.warn(f"adaptation objective decreased by {objective[-1] - value:.4g} at iteration {iteration}",
                          RuntimeWarning, stacklevel=2)
        objective.append(value)
        if iteration < n_iter:
            params = [m_step(st, p[2], spec) for st, p in zip(stats, params)]
    return params, np.array(objective), decreases


def adapt_models(known: Mapping[str, SourceModel], power: np.ndarray, adaptation: Adaptation,
                 priors: Optional[Mapping] = None, seed: int = 0, emission=None,
                 dictionary_size: int = 0) -> AdaptationResult:
    """Fit the unknown sources' HMMs on a mixture by generalised EM, the ``known`` ones held fixed.

    Args:
        known: ``{name: SourceModel}`` the trained sources (their states' power spectra
            ``emission["psd"] (N_k, F)``, which every emission keeps).
        power: ``(T, F)`` the mixture's STFT power ``|y|^2``.
        adaptation: the unknown sources, their states and the iterations.
        priors: the unknown chains' priors by role (``ModelSettings.unknown_prior_specs()``).
        seed: seeds the k-means starts (unknown source ``i`` uses ``seed + i``).
        emission: the separator's ``Emission`` (``None``: complex Gaussian), whose parameters the
            unknown sources are expressed in (``source_models.from_expected_power``), with
            ``dictionary_size``-spectrum state dictionaries where it is not 0.

    Returns:
        ``AdaptationResult`` (the objective of the second stage); the known sources'
        ``SourceModel`` objects are passed through untouched.
    """
    power = np.asarray(power, np.float32)
    n_frames = power.shape[0]
    frames = jnp.asarray(padded(power))
    models = list(known.values())
    fixed = _Fixed(tuple(jnp.log(jnp.asarray(m.init, jnp.float32)) for m in models),
                   tuple(jnp.log(jnp.asarray(m.trans, jnp.float32)) for m in models),
                   tuple(jnp.asarray(m.emission["psd"], jnp.float32) for m in models))
    n_unknown = len(adaptation.unknown)
    chains = tuple(range(len(models), len(models) + n_unknown))

    def posteriors(params):
        found = unknown_posteriors(fixed.log_init + tuple(jnp.log(p[0]) for p in params),
                                   fixed.log_trans + tuple(jnp.log(p[1]) for p in params),
                                   fixed.psd + tuple(p[2] for p in params), frames, n_frames, chains)
        return [(np.asarray(m)[:n_frames], np.asarray(e)[:n_frames]) for m, e in found]

    stationary_spec = unknown_spec(1, priors)
    params = [initial_params(power, stationary_spec, seed + i, INIT_SCALE) for i in range(n_unknown)]
    params, _, _ = run_em(fixed, params, frames, n_frames, STATIONARY_ITER, stationary_spec)
    spec = unknown_spec(adaptation.n_states, priors)
    params = [initial_params(expected, spec, seed + i) for i, (_, expected) in enumerate(posteriors(params))]
    params, objective, decreases = run_em(fixed, params, frames, n_frames, adaptation.n_iter, spec)
    adapted = dict(known)
    emission = emission or EMISSIONS["complex_gaussian"]
    # the learnt chains' posteriors are read only to refit them in another emission or to learn dictionaries
    wanted = emission.family != "complex_gaussian" or dictionary_size
    found = posteriors(params) if wanted else [(None, None)] * n_unknown
    for i, (name, (init, trans, psd), (marginals, expected)) in enumerate(zip(adaptation.unknown, params, found)):
        adapted[name] = from_expected_power(emission, init, trans, psd, marginals, expected, priors,
                                            dictionary_size, seed + i)
    return AdaptationResult(adapted, objective, decreases)
