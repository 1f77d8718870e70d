"""The posterior over a mixture's joint states, in the form the chosen masks read.

A separator decides once, from its masks, which form it needs (``FORMS``):

- ``Passes``: the exact posterior kept as the two-filter passes' inputs; masks read only posterior
  expectations of per-joint-state values (``hmm.posterior_expectation``), so the posterior over
  ``prod N`` joint states is never written out;
- ``Joint``: the exact posterior written out, ``(T, prod N)`` (or, as a diagnostic, the product of
  the state posteriors each source model finds on its own clean source);
- ``Factored``: per-source state marginals only (structured mean field).

Frames may be padded at the end (to a ``runtime.frame_bucket`` size, so that kernels compiled for
one length serve others): with ``length``, frames from it on observe nothing (log-likelihood 0
for every joint state), which leaves every real frame's posterior as it is without them; their
own posteriors mean nothing and the caller drops them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from fhmm_ppl import hmm
from fhmm_ppl.hmm.filtering import mask_padding

#: Mixture frames assumed when planning ahead of a mixture (8 s at 16 kHz, hop 128).
TYPICAL_FRAMES = 1000


def plan(emission, n_states: tuple, n_frames: int, method: str = "auto"):
    """``hmm.plan_inference`` for a separator; an emission without mean field is refused a plan
    that is not exact, with advice."""
    chosen = hmm.plan_inference(n_states, n_frames, method=method)
    if chosen.method != "exact" and not emission.mean_field:
        joint = f"{n_states[0]}^{len(n_states)}" if len(set(n_states)) == 1 else " x ".join(map(str, n_states))
        raise ValueError(f"the {emission.name} separator needs exact inference over {joint} joint states, but the plan "
                         f"here is {chosen.method} ({chosen.reason}); use emission='complex_gaussian' (structured mean "
                         "field, linear in the number of sources) or fewer states per source")
    return chosen


class ModelSet(NamedTuple):
    """One set of source models as device arrays, converted once when a separator is built.

    Attributes:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        params: the emission's ``Params`` (K-tuples of arrays).
        prepared: ``emission.prepare(params, scale)``, the log-likelihood's mixture-independent part,
            or ``None`` (made when needed).
        shares: ``(prod N, (K - 1) F)`` Wiener shares (``masks.wiener_shares``) or ``None`` (made when needed).
        dictionaries: K arrays ``(N_k, F, R)`` or ``None``.
        warped: the pitch-warped sources' dictionaries under every warp, as rows (``state_nmf.warped_rows``),
            or ``None`` (made when needed): every block of a stream reads them.
        factors: K arrays ``(N_k, F, R)`` or ``None``s, each source's reconstruction factors
            (``separation.reconstruction``), or ``None`` where no source has them.
    """

    log_init: tuple
    log_trans: tuple
    params: tuple
    prepared: object
    shares: object
    dictionaries: object
    warped: object = None
    factors: object = None

    @property
    def n_states(self) -> tuple[int, ...]:
        return tuple(int(v.shape[0]) for v in self.log_init)


class Passes(NamedTuple):
    log_init: tuple
    log_trans: tuple
    log_lik: jax.Array  # (T, N_1, ..., N_K), scaled

    def expect(self, values):
        """``E[values[s_t] | y]`` ``(T, D)`` for per-joint-state values ``(prod N, D)``."""
        return hmm.posterior_expectation(self.log_init, self.log_trans, self.log_lik, values)[0]


class Joint(NamedTuple):
    joint: jax.Array  # (T, prod N)
    n_states: tuple

    def expect(self, values):
        return self.joint @ values

    def marginals(self):
        shape = (self.joint.shape[0],) + self.n_states
        return hmm.chain_marginals(self.joint.reshape(shape), len(self.n_states), first_axis=1)


class Factored(NamedTuple):
    per_source: tuple  # K arrays (T, N_k)

    def marginals(self):
        return self.per_source


#: The posterior forms, from the cheapest to make to the most general.
FORMS = ("expectation", "joint", "marginals")


def infer(models: ModelSet, emission, frames, scale: float, method: str, form: str, length=None):
    """The posterior of ``models`` on the mixture's model frames ``(T, D)`` (a JAX array).

    Args:
        method: the plan's ``"exact"`` or ``"mean_field"``; form: what the masks read (``FORMS``).
        length: frames ``t >= length`` are padding (``None``: none are).
    """
    if method != "exact":
        return Factored(emission.mean_field_marginals(models.log_init, models.log_trans, models.params, frames, scale,
                                                      length))
    log_lik = scaled_log_lik(models, emission, frames, scale, length)
    if form == "expectation":
        return Passes(models.log_init, models.log_trans, log_lik)
    return Joint(hmm.joint_posterior(models.log_init, models.log_trans, log_lik, flat=True)[0], models.n_states)


def scaled_log_lik(models: ModelSet, emission, frames, scale: float, length=None):
    """The frames' log-likelihoods times ``scale``, ``(T, N_1, ..., N_K)``; 0 at frames ``t >= length``."""
    prepared = emission.prepare(models.params, scale) if models.prepared is None else models.prepared
    log_lik = emission.log_lik(prepared, frames)
    return log_lik if length is None else _mask_padding(log_lik, length)


#: ``filtering.mask_padding`` compiled once per shape (the length is traced, not a constant).
_mask_padding = jax.jit(mask_padding)


def clean_source_posterior(models: ModelSet, emission, own_frames, scale: float, length=None) -> Joint:
    """The product of each source's state posteriors on its own clean model frames, as a joint
    posterior ``(T, prod N)``: what inference on the mixture would find if it found every source's
    states (frames ``t >= length`` are padding)."""
    joint = None
    for k, frames in enumerate(own_frames):
        single = ModelSet((models.log_init[k],), (models.log_trans[k],), type(models.params)(
            *(None if p is None else (p[k],) for p in models.params)), None, None, None)
        marginal = hmm.posteriors(single.log_init, single.log_trans,
                                  scaled_log_lik(single, emission, frames, scale), length).marginals[0]
        joint = marginal if joint is None else (joint[:, :, None] * marginal[:, None, :]).reshape(marginal.shape[0], -1)
    return Joint(joint, models.n_states)
