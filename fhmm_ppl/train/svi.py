"""Stochastic variational inference on the NumPyro FHMM model with optax optimisers.

``guide="map"`` uses ``AutoDelta`` (a MAP point estimate: the loss is minus the
log posterior, the same objective as EM's); ``guide="normal"`` uses
``AutoNormal`` (a mean-field Gaussian posterior over the unconstrained
parameters). Works for any number of chains and any prior with a NumPyro
distribution, conjugate or not.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.optim import optax_to_numpyro

from fhmm_ppl.models.fhmm import FHMMParams, FHMMSpec, fhmm_model, params_from_sites, site_values
from fhmm_ppl.train.batching import pad_sequences

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adabelief")


class SVIResult(NamedTuple):
    """Outcome of SVI.

    Attributes:
        params: point estimate (MAP for ``map``; the posterior median for ``normal``).
        losses: ``(n_steps,)`` loss per step (minus the ELBO; minus the log posterior for MAP).
        guide: the NumPyro guide; guide_params: its fitted parameters.
    """

    params: FHMMParams
    losses: np.ndarray
    guide: Any
    guide_params: dict


def make_optimizer(name: str, learning_rate: float, clip_norm: Optional[float] = 10.0):
    """An optax optimiser by name, with optional global-norm gradient clipping."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    base = getattr(optax, name)(learning_rate)
    return optax.chain(optax.clip_by_global_norm(clip_norm), base) if clip_norm else base


def fit_svi(
    sequences: Sequence[np.ndarray],
    spec: FHMMSpec,
    *,
    init: FHMMParams,
    guide: str = "map",
    optimizer: str = "adam",
    learning_rate: float = 1e-2,
    n_steps: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> SVIResult:
    """Fit the FHMM's parameters by SVI.

    Args:
        sequences: feature sequences ``(T_b, D)``.
        spec: the model spec (any number of chains).
        init: starting parameters (e.g. ``train.em.initial_params`` or an EM fit).
        guide: ``"map"`` (AutoDelta) or ``"normal"`` (AutoNormal).
        optimizer, learning_rate: optax optimiser by name.
        n_steps: optimisation steps; seed: PRNG seed.

    Returns:
        ``SVIResult``.
    """
    if guide not in ("map", "normal"):
        raise ValueError(f"guide must be 'map' or 'normal', got {guide!r}")
    batch, lengths = pad_sequences(sequences)
    batch, lengths = jnp.asarray(batch), jnp.asarray(lengths)
    init_loc = init_to_value(values=site_values(init, spec))

    def model(observations, lengths):
        return fhmm_model(observations, lengths, spec=spec)

    auto = AutoDelta(model, init_loc_fn=init_loc) if guide == "map" else AutoNormal(model, init_loc_fn=init_loc, init_scale=1e-2)
    svi = SVI(model, auto, optax_to_numpyro(make_optimizer(optimizer, learning_rate)), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(seed), n_steps, batch, lengths, progress_bar=progress)
    losses = np.asarray(result.losses)
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        raise FloatingPointError(f"SVI loss became non-finite at step {bad}; lower the learning rate")
    sites = auto.median(result.params)
    return SVIResult(params_from_sites(sites, spec), losses, auto, result.params)
