"""A new emission is one class and one registry entry: defined here, it trains, separates, saves and loads
through the separator's own code, untouched."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_separation import RATE, high_noise, low_tones

from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import EMISSIONS, fit_separator, load, register_emission
from fhmm_ppl.separation.emissions import Emission
from fhmm_ppl.separation.emissions.base import state_power_spectra


class IsotropicParams(NamedTuple):
    means: tuple  # K arrays (N_k, D): each state's log-magnitude spectrum
    variances: tuple  # K arrays (N_k,): one variance per state
    psd: tuple  # K arrays (N_k, F): each state's power spectrum on the training audio (Wiener masks)


@jax.jit
def isotropic_log_lik(frames, means, variances, scale):
    """Two sources whose magnitudes add in power: a joint state predicts ``log |y|`` as
    ``0.5 log(exp(2 m_1) + exp(2 m_2))`` with variance ``v_1 + v_2`` in every bin, ``(T, N_1, N_2)``."""
    predicted = 0.5 * jnp.logaddexp(2 * means[0][:, None, :], 2 * means[1][None, :, :])  # (N1, N2, D)
    var = variances[0][:, None] + variances[1][None, :]  # (N1, N2)
    sq = (jnp.sum(frames**2, axis=1)[:, None, None] - 2 * jnp.einsum("td,abd->tab", frames, predicted)
          + jnp.sum(predicted**2, axis=2)[None])
    dim = frames.shape[1]
    return scale * (-0.5 * sq / var - 0.5 * dim * jnp.log(2 * jnp.pi * var))


class IsotropicLogMagnitude(Emission):
    """Isotropic Gaussian states on log-magnitude spectra (two sources)."""

    name = "test_isotropic"
    family = "gaussian"
    family_options = {"covariance_type": "spherical"}
    prior_roles = ("means", "covars")
    soft_masks = ("wiener",)
    Params = IsotropicParams

    def frames(self, spectrum):
        return np.log(np.abs(spectrum) + 1e-5).astype(np.float32)

    def source_params(self, fitted, power, marginals):
        return {"means": np.asarray(fitted.emission.means[0]), "variances": np.asarray(fitted.emission.covars[0]),
                "psd": state_power_spectra(marginals, power)}

    def log_lik(self, prepared, frames):
        params, scale = prepared
        return isotropic_log_lik(frames, params.means, params.variances, scale)


@pytest.fixture
def registered():
    register_emission(IsotropicLogMagnitude)
    yield IsotropicLogMagnitude.name
    del EMISSIONS[IsotropicLogMagnitude.name]


def test_a_toy_emission_trains_separates_saves_and_loads(registered, tmp_path):
    rng = np.random.default_rng(7)
    train = {"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}
    sep = fit_separator(train, RATE, emission=registered, n_states=6, max_iter=15, n_models=1)
    assert sep.models["tones"].emission["variances"].shape == (6,)  # the toy's own parameters were kept
    assert sep.options.soft_mask == "wiener" and sep.options.dictionary_size == 0
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    est, gains = sep.separate(refs.sum(0), return_gains=True)
    np.testing.assert_allclose(gains.sum(0), 1.0, atol=1e-5)
    assert np.all(bss_eval(refs, np.stack([est["tones"], est["noise"]])).sdr > 12)
    loaded = load(sep.save(tmp_path / "toy"))
    assert loaded.options == sep.options and type(loaded.emission) is IsotropicLogMagnitude
    np.testing.assert_allclose(loaded.separate(refs.sum(0))["tones"], est["tones"], atol=1e-5)
    # what the toy does not provide is refused when the options are made, naming the emission
    with pytest.raises(ValueError, match="mean_field is not available for the test_isotropic emission"):
        fit_separator(train, RATE, emission=registered, inference="mean_field")
    with pytest.raises(ValueError, match="soft_mask 'dominance' is not made by the test_isotropic emission"):
        fit_separator(train, RATE, emission=registered, soft_mask="dominance")


def test_a_toy_emission_learns_an_unknown_source_on_the_mixture(registered, monkeypatch):
    """Semi-supervised separation needs nothing more of an emission: the unknown source is learnt in the
    complex-Gaussian model and fitted in the toy's own parameters."""
    rng = np.random.default_rng(8)
    semi = fit_separator({"tones": low_tones(rng, 6)}, RATE, emission=registered, unknown="noise", unknown_states=3,
                         n_states=6, max_iter=15, n_models=1)
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    adapted = semi.adapt(refs.sum(0))
    assert adapted.models["noise"].emission["variances"].shape == (3,)
    est = adapted.separate(refs.sum(0))
    floor = bss_eval(refs, np.stack([refs.sum(0)] * 2)).sdr
    assert np.all(bss_eval(refs, np.stack([est["tones"], est["noise"]])).sdr > floor + 6)
    monkeypatch.setattr(IsotropicLogMagnitude, "adaptable", False)
    with pytest.raises(ValueError, match="semi-supervised adaptation .* emissions, not test_isotropic"):
        fit_separator({"tones": low_tones(rng, 2)}, RATE, emission=registered, unknown="noise")


def test_an_emission_must_subclass_the_interface():
    with pytest.raises(TypeError, match="subclass of fhmm_ppl.separation.emissions.Emission"):
        register_emission(object)
