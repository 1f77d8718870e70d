"""Priors by name: a registry that users extend in a few lines.

A prior is a small frozen object with

* ``distribution(shape) -> numpyro.distributions.Distribution`` over a
  parameter of that shape (used by the NumPyro model, hence by SVI and MCMC);
* optionally ``map_update(**stats) -> array``: the closed-form MAP M-step
  under this prior (used by EM). A prior without it is not conjugate; EM then
  refuses it with an error that names it, rather than silently ignoring it.

Register a new prior with the decorator and refer to it by name from YAML::

    from fhmm_ppl.models.priors import register_prior
    import numpyro.distributions as dist

    @register_prior("half_cauchy_psd")
    @dataclass(frozen=True)
    class HalfCauchyPSD:
        scale: float = 1.0
        def distribution(self, shape):
            return dist.HalfCauchy(self.scale * jnp.ones(shape)).to_event(len(shape))

Roles: ``initial`` ``(N,)`` and ``transition`` ``(N, N)`` probabilities;
``means`` ``(N, D)``; ``variances`` (diag ``(N, D)``, spherical ``(N,)``) and
``psd`` ``(N, F)`` positive scales; ``covariance`` full ``(N, D, D)`` / tied ``(D, D)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array

#: Smallest probability EM's Dirichlet M-step returns (float32-safe in log space).
PROBABILITY_FLOOR = 1e-12


class NotConjugateError(ValueError):
    """A prior has no closed-form MAP update, so EM cannot use it."""


class Prior(Protocol):
    """What every registered prior provides (``map_update`` is optional)."""

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:  # pragma: no cover - protocol
        ...


_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_prior(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator registering a prior factory under ``name``."""

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"a prior named {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        factory.prior_name = name  # type: ignore[attr-defined]
        return factory

    return decorate


def available_priors() -> list[str]:
    """Names of every registered prior, sorted."""
    return sorted(_REGISTRY)


def make_prior(name: str, **hyperparameters: Any) -> Any:
    """Build the prior registered as ``name`` with its hyperparameters.

    Raises:
        ValueError: unknown name (with the closest registered one) or bad hyperparameters.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown prior {name!r}{hint} (registered: {', '.join(available_priors())})")
    try:
        return _REGISTRY[name](**hyperparameters)
    except TypeError as err:
        raise ValueError(f"bad hyperparameters for prior {name!r}: {err}") from None


def map_update(prior: Any, role: str, **stats: Array) -> Array:
    """Closed-form MAP update under ``prior``; a clear error if it has none."""
    update = getattr(prior, "map_update", None)
    if update is None:
        raise NotConjugateError(
            f"the {role} prior {type(prior).__name__} has no closed-form MAP update, so EM cannot honour it; "
            "train with SVI (training.method: svi) or register a prior with a map_update method"
        )
    return update(**stats)


#: What the values of each parameter role are; a prior's support must match.
_ROLE_VALUES = {"initial": "simplex", "transition": "simplex", "psd": "positive", "means": "real"}
#: For each kind of value: a value the support must contain, one it must not (None: anything goes), a wording.
_SUPPORT_CHECKS = {
    "simplex": (np.full((3, 3), 1 / 3), np.ones((3, 3)), "probability vectors"),
    "positive": (np.ones((3, 3)), -np.ones((3, 3)), "positive"),
    "real": (-np.ones((3, 3)), None, "real"),
    "positive_definite": (np.tile(np.eye(3), (3, 1, 1)), -np.tile(np.eye(3), (3, 1, 1)), "positive-definite matrices"),
}


def check_prior_role(prior: Any, role: str, covariance_type: str | None = None) -> None:
    """Raise ``ValueError`` unless ``prior``'s support suits the parameter ``role``.

    Roles hold probability vectors (``initial``, ``transition``), positive scales
    (``psd``; ``covars`` for diagonal and spherical covariances and log-max
    variances), real values (``means``) or positive-definite matrices (``covars``
    with ``covariance_type`` ``full`` or ``tied``). The check evaluates the
    prior's ``distribution(shape).support`` on one value of the right kind and
    one of the wrong kind, so it works for user-registered priors too.
    """
    if role == "covars":
        kind = "positive_definite" if covariance_type in ("full", "tied") else "positive"
    elif role in _ROLE_VALUES:
        kind = _ROLE_VALUES[role]
    else:
        return  # a role this check does not know: the family validates it
    inside, outside, wording = _SUPPORT_CHECKS[kind]
    name = getattr(prior, "prior_name", type(prior).__name__)
    try:
        support = prior.distribution(tuple(inside.shape)).support
        fits = bool(jnp.all(support(inside))) and (outside is None or not bool(jnp.all(support(outside))))
    except Exception as err:  # a user prior that cannot describe a parameter of this shape
        raise ValueError(f"prior {name!r} cannot be used for the {role} role ({type(err).__name__}: {err})") from None
    if not fits:
        raise ValueError(f"prior {name!r} cannot be used for the {role} role: its support is {support}, "
                         f"but {role} values are {wording}")


def _normalise_rows(weights: Array) -> Array:
    total = weights.sum(axis=-1, keepdims=True)
    uniform = jnp.full_like(weights, 1.0 / weights.shape[-1])
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), uniform)


@register_prior("dirichlet")
@dataclass(frozen=True)
class DirichletPrior:
    """Dirichlet on each probability vector (row), with an optional sticky bonus.

    ``concentration`` > 1 keeps every probability away from zero, so initial
    probabilities that hit zero can recover; ``sticky`` adds to the diagonal
    of transition rows (self-transitions), favouring longer state durations.
    """

    concentration: float = 1.0
    sticky: float = 0.0

    def __post_init__(self) -> None:
        if self.concentration <= 0:
            raise ValueError(f"dirichlet concentration must be positive, got {self.concentration}")
        if self.sticky < 0:
            raise ValueError(f"dirichlet sticky must be non-negative, got {self.sticky}")

    def _alpha(self, shape: tuple[int, ...]) -> Array:
        alpha = jnp.full(shape, float(self.concentration))
        if len(shape) == 2:
            alpha = alpha + self.sticky * jnp.eye(shape[0])
        return alpha

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        d = dist.Dirichlet(self._alpha(shape))
        return d.to_event(len(shape) - 1) if len(shape) > 1 else d

    def map_update(self, counts: Array) -> Array:
        """Posterior mode given expected counts ``(N,)`` or ``(N, N)``.

        Exact zeros are lifted to ``PROBABILITY_FLOOR`` (then renormalised): a
        zero has no log density under the Dirichlet and could never recover.
        """
        mode = _normalise_rows(jnp.maximum(counts + self._alpha(counts.shape) - 1.0, 0.0))
        return _normalise_rows(jnp.maximum(mode, PROBABILITY_FLOOR))


class _ImproperFlat:
    """Improper flat prior over a support: log density 0; EM's M-step is maximum likelihood."""

    support = dist.constraints.real

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        return dist.ImproperUniform(self.support, (), shape)

    def map_update(self, **stats: Array) -> Array:
        return stats["ml"]


@register_prior("flat")
@dataclass(frozen=True)
class FlatPrior(_ImproperFlat):
    """Flat prior on real parameters (means): ML, as hmmlearn with zero prior weights."""


@register_prior("positive_flat")
@dataclass(frozen=True)
class PositiveFlatPrior(_ImproperFlat):
    """Flat prior on positive parameters (variances, spectra): ML in EM."""

    support = dist.constraints.positive


@register_prior("shared_shape")
@dataclass(frozen=True)
class SharedShapePrior(_ImproperFlat):
    """Every state one spectral shape at its own level, ``v_{s, f} = g_s w_f`` (``psd`` role): a
    stationary sound whose loudness changes (fan, traffic, hum), as a constraint, flat within it.

    For a source learnt on a mixture (semi-supervised separation) this keeps its states from taking
    the known sources' spectra: a free state can copy a vowel, a shared shape cannot. The EM M-step
    maximises ``-sum_{s, f} n_{s, f} (log v_{s, f} + P_{s, f} / v_{s, f})`` over ``g`` and ``w``, which is
    convex in ``(log g, log w)``; alternating the two closed-form coordinate updates ``iterations``
    times converges to its maximum. (The log density is 0: the NumPyro model does not see the
    constraint, so SVI does not honour it.)
    """

    support = dist.constraints.positive
    iterations: int = 50

    def map_update(self, shape_stat: Array, scale_stat: Array, **_: Array) -> Array:
        """``g w^T`` ``(N, F)`` from ``shape_stat`` (visits ``n``) and ``scale_stat`` (summed powers ``n P``)."""
        tiny = 1e-30
        level = jnp.ones((scale_stat.shape[0], 1), scale_stat.dtype)
        shape = (scale_stat.sum(0, keepdims=True) + tiny) / (shape_stat.sum(0, keepdims=True) + tiny)

        def step(_, carry):
            level, shape = carry
            level = (jnp.sum(scale_stat / shape, 1, keepdims=True) + tiny) / (jnp.sum(shape_stat, 1, keepdims=True) + tiny)
            shape = (jnp.sum(scale_stat / level, 0, keepdims=True) + tiny) / (jnp.sum(shape_stat, 0, keepdims=True) + tiny)
            return level, shape

        level, shape = jax.lax.fori_loop(0, self.iterations, step, (level, shape))
        return level * shape


@register_prior("normal")
@dataclass(frozen=True)
class NormalPrior:
    """Independent Normal(loc, scale) on every entry (emission means)."""

    loc: float = 0.0
    scale: float = 10.0

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        return dist.Normal(jnp.full(shape, float(self.loc)), float(self.scale)).to_event(len(shape))

    def map_update(self, weighted_sum: Array, weight: Array, variance: Array, **_: Array) -> Array:
        """Conditional mode given variances: precision-weighted data and prior.

        Args:
            weighted_sum: ``sum_t gamma_t y_t`` ``(N, D)``; weight: ``sum_t gamma_t`` ``(N, 1)``;
            variance: current observation variance, broadcastable to ``(N, D)``.
        """
        precision = weight / variance + 1.0 / self.scale**2
        return (weighted_sum / variance + self.loc / self.scale**2) / precision


@register_prior("inverse_gamma")
@dataclass(frozen=True)
class InverseGammaPrior:
    """InverseGamma(concentration, rate) on every positive entry (variances, PSDs)."""

    concentration: float = 1.0
    rate: float = 1e-3

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        return dist.InverseGamma(jnp.full(shape, float(self.concentration)), float(self.rate)).to_event(len(shape))

    def map_update(self, shape_stat: Array, scale_stat: Array, **_: Array) -> Array:
        """Posterior mode ``(rate + scale_stat) / (concentration + shape_stat + 1)``."""
        return (self.rate + scale_stat) / (self.concentration + shape_stat + 1.0)


@register_prior("inverse_wishart")
@dataclass(frozen=True)
class InverseWishartPrior:
    """InverseWishart(df, scale * I) on covariance matrices (full / tied)."""

    df: float = 0.0
    scale: float = 1e-3

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        dim = shape[-1]
        df = max(float(self.df), dim - 1 + 1e-3)
        base = dist.InverseWishart(df, scale_matrix=self.scale * jnp.eye(dim))
        if len(shape) == 3:
            return base.expand((shape[0],)).to_event(1)
        return base

    def map_update(self, scatter: Array, weight: Array, **_: Array) -> Array:
        """Posterior mode ``(Psi + S) / (df + n + D + 1)``; ``scatter (.., D, D)``, ``weight (..,)``."""
        dim = scatter.shape[-1]
        df = max(float(self.df), dim - 1 + 1e-3)
        return (self.scale * jnp.eye(dim) + scatter) / (df + weight[..., None, None] + dim + 1.0)


@register_prior("flat_covariance")
@dataclass(frozen=True)
class FlatCovariancePrior(_ImproperFlat):
    """Flat prior on positive-definite matrices (full / tied covariances): ML in EM."""

    support = dist.constraints.positive_definite

    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        batch = shape[:-2]
        return dist.ImproperUniform(self.support, batch, shape[-2:]).to_event(len(batch))
