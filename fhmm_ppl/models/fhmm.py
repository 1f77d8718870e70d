"""The factorial HMM as a NumPyro model.

``fhmm_model`` samples each chain's initial and transition probabilities and
the emission parameters from their priors, computes the marginal likelihood
``log p(y | theta)`` with the exact factored forward pass (the discrete chains
are summed out, never sampled) and adds it with ``numpyro.factor``. The same
function serves SVI (MAP with ``AutoDelta``, variational with ``AutoNormal``),
NUTS, and EM's objective (``log_posterior``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpyro
from jax import Array
from numpyro.infer.util import log_density

from fhmm_ppl.hmm import log_marginal
from fhmm_ppl.models.families import make_family
from fhmm_ppl.models.priors import DirichletPrior, check_prior_role, make_prior


class FHMMParams(NamedTuple):
    """All parameters of a factorial HMM (a pytree).

    Attributes:
        init: K arrays ``(N_k,)`` of initial probabilities.
        trans: K arrays ``(N_k, N_k)`` of transition probabilities (rows sum to one).
        emission: the family's parameter NamedTuple.
    """

    init: tuple[Array, ...]
    trans: tuple[Array, ...]
    emission: Any

    @property
    def log_init(self) -> tuple[Array, ...]:
        return tuple(jnp.log(p) for p in self.init)

    @property
    def log_trans(self) -> tuple[Array, ...]:
        return tuple(jnp.log(p) for p in self.trans)


@dataclass(frozen=True)
class FHMMSpec:
    """What a factorial HMM is: states per chain, emission family and priors.

    Attributes:
        n_states: ``(N_1, ..., N_K)``.
        family: an emission family (``fhmm_ppl.models.families``).
        initial_prior, transition_prior: priors on probability vectors / rows.
        emission_priors: role -> prior for the family's parameters; missing
            roles take the family's defaults.
    """

    n_states: tuple[int, ...]
    family: Any = field(default_factory=lambda: make_family("gaussian"))
    initial_prior: Any = field(default_factory=DirichletPrior)
    transition_prior: Any = field(default_factory=DirichletPrior)
    emission_priors: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.n_states or any(int(n) < 1 for n in self.n_states):
            raise ValueError(f"n_states must be a non-empty sequence of positive ints, got {self.n_states}")
        object.__setattr__(self, "n_states", tuple(int(n) for n in self.n_states))
        merged = dict(self.family.default_priors())
        unknown = set(self.emission_priors) - set(merged)
        if unknown:
            raise ValueError(
                f"unknown emission prior role(s) {sorted(unknown)} for the {self.family.name} emission; "
                f"its roles are {sorted(merged)}"
            )
        merged.update(self.emission_priors)
        object.__setattr__(self, "emission_priors", merged)

    def __hash__(self) -> int:  # usable as a static argument
        return hash((self.n_states, self.family, self.initial_prior, self.transition_prior,
                     tuple(sorted(self.emission_priors.items()))))

    @property
    def n_chains(self) -> int:
        return len(self.n_states)


def make_spec(n_states: tuple[int, ...], family: Any, priors: Optional[Mapping[str, Any]] = None) -> FHMMSpec:
    """A spec from priors given by role as ``{"name": registered prior, "params": {...}}``.

    Roles ``initial`` and ``transition`` set the Markov priors; the others are
    the family's emission roles (``psd``; ``means``, ``covars``).
    """
    built = {}
    for role, entry in (priors or {}).items():
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ValueError(f"prior for {role!r} must be a mapping with a 'name' (and optional 'params')")
        built[role] = make_prior(entry["name"], **dict(entry.get("params") or {}))
        check_prior_role(built[role], role, getattr(family, "covariance_type", None))
    markov = {k: built.pop(k) for k in ("initial", "transition") if k in built}
    return FHMMSpec(tuple(n_states), family, initial_prior=markov.get("initial", DirichletPrior()),
                    transition_prior=markov.get("transition", DirichletPrior()), emission_priors=built)


def sample_params(spec: FHMMSpec, dim: int) -> FHMMParams:
    """NumPyro sample sites for every parameter (call inside a model)."""
    init, trans = [], []
    for k, n in enumerate(spec.n_states):
        init.append(numpyro.sample(f"init_{k}", spec.initial_prior.distribution((n,))))
        trans.append(numpyro.sample(f"trans_{k}", spec.transition_prior.distribution((n, n))))
    emission = spec.family.sample(spec.n_states, dim, spec.emission_priors)
    return FHMMParams(tuple(init), tuple(trans), emission)


def sequence_log_marginals(params: FHMMParams, family: Any, observations: Array,
                           lengths: Optional[Array] = None) -> Array:
    """Log marginal of each sequence of a padded batch.

    Args:
        observations: ``(B, T, D)`` (padding after each sequence's length).
        lengths: ``(B,)`` ints, or None when no sequence is padded.

    Returns:
        ``(B,)`` floats.
    """
    log_init, log_trans = params.log_init, params.log_trans

    def one(obs, length):
        return log_marginal(log_init, log_trans, family.log_lik(obs, params.emission), length)

    if lengths is None:
        return jax.vmap(lambda o: one(o, None))(observations)
    return jax.vmap(one)(observations, lengths)


def batch_log_marginal(params: FHMMParams, family: Any, observations: Array, lengths: Optional[Array] = None) -> Array:
    """Sum of ``sequence_log_marginals`` over a padded batch: ``()`` float."""
    return sequence_log_marginals(params, family, observations, lengths).sum()


def fhmm_model(observations: Optional[Array] = None, lengths: Optional[Array] = None, *, spec: FHMMSpec, dim: Optional[int] = None):
    """The FHMM as a NumPyro model.

    Args:
        observations: ``(T, D)`` one sequence or ``(B, T, D)`` a padded batch;
            None samples parameters from the prior only.
        lengths: ``(B,)`` valid frames per sequence (batch only).
        spec: the model specification.
        dim: feature dimension D, needed only when ``observations`` is None.

    Returns:
        ``FHMMParams`` (the sampled parameters).
    """
    if observations is not None:
        dim = observations.shape[-1]
    if dim is None:
        raise ValueError("fhmm_model needs observations or dim")
    params = sample_params(spec, dim)
    if observations is not None:
        batch = observations if observations.ndim == 3 else observations[None]
        numpyro.factor("log_marginal", batch_log_marginal(params, spec.family, batch, lengths))
    return params


def site_values(params: FHMMParams, spec: FHMMSpec) -> dict[str, Array]:
    """Parameters as a dict of NumPyro site values (for ``init_to_value``, ``log_density``)."""
    out = {f"init_{k}": p for k, p in enumerate(params.init)}
    out.update({f"trans_{k}": p for k, p in enumerate(params.trans)})
    out.update(spec.family.site_values(params.emission))
    return out


def params_from_sites(sites: Mapping[str, Array], spec: FHMMSpec) -> FHMMParams:
    """Inverse of ``site_values``."""
    n_chains = spec.n_chains
    return FHMMParams(
        tuple(sites[f"init_{k}"] for k in range(n_chains)),
        tuple(sites[f"trans_{k}"] for k in range(n_chains)),
        spec.family.from_sites(sites, n_chains),
    )


def log_prior(params: FHMMParams, spec: FHMMSpec, dim: int) -> Array:
    """``log p(theta)`` under the spec's priors (``()`` float)."""
    value, _ = log_density(fhmm_model, (None,), {"spec": spec, "dim": dim}, site_values(params, spec))
    return value


def log_posterior(params: FHMMParams, spec: FHMMSpec, observations: Array, lengths: Optional[Array] = None) -> Array:
    """Unnormalised log posterior ``log p(theta) + sum_b log p(y_b | theta)`` (EM's and MAP's objective)."""
    value, _ = log_density(fhmm_model, (observations, lengths), {"spec": spec}, site_values(params, spec))
    return value
