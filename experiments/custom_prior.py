"""A user-defined prior, registered by name for use from YAML (see custom_prior.yaml).

Each state's power spectrum gets a log-normal prior around a spectral tilt:
``log v(f) ~ Normal(log(level) - tilt * log(1 + f / pivot), scale)``. Speech and
most natural sounds fall off with frequency, so this pulls rarely-visited
states towards a plausible shape instead of leaving them to noise. It is not
conjugate to the complex-Gaussian likelihood, so EM refuses it (with a message
saying so) and the experiment trains with SVI.
"""

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro.distributions as dist

from fhmm_ppl.models import register_prior


@register_prior("tilted_lognormal_psd")
@dataclass(frozen=True)
class TiltedLogNormalPSD:
    level: float = 1e-2
    tilt: float = 1.0
    pivot: float = 8.0
    scale: float = 3.0

    def distribution(self, shape):
        n_states, n_bins = shape
        bins = jnp.arange(n_bins)
        loc = jnp.log(self.level) - self.tilt * jnp.log1p(bins / self.pivot)
        return dist.LogNormal(jnp.broadcast_to(loc, shape), self.scale).to_event(2)
