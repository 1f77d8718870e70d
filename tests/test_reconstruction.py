"""Reconstruction factors learnt on training mixtures: their masks, their objective, their training."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_separation import RATE, low_tones
from test_warps import steady

from fhmm_ppl.audio.features import STFTConfig, stft
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.reconstruction import (
    FACTORS,
    OFFSETS_DB,
    PENALTY,
    REPEAT_DB,
    _objective,
    factored_shares,
    learns,
    learnt_factors,
    repetition,
    training_mixtures,
)
from fhmm_ppl.separation.state_nmf import column_terms, dictionary_masks
from fhmm_ppl.separation.storage import FORMAT_VERSION

FAST = dict(n_states=4, max_iter=5, n_models=1, state_components=2)


def random_fit(rng, n_frames=40, n_bins=33):
    """Two sources' dictionaries ``(N, F, R)`` (columns summing to one), two states each per frame and magnitudes."""
    dictionaries = tuple(rng.gamma(1.0, size=(n, n_bins, 3)).astype(np.float32) for n in (4, 5))
    dictionaries = tuple(d / d.sum(axis=1, keepdims=True) for d in dictionaries)
    states = np.stack([rng.integers(0, 4, (n_frames, 2)), rng.integers(0, 5, (n_frames, 2))], axis=1)
    magnitude = rng.gamma(1.0, size=(n_frames, n_bins)).astype(np.float32)
    return dictionaries, states, magnitude


@pytest.mark.parametrize("warps", [(), (0.94, 1.0, 1.06)])
def test_the_objectives_masks_are_the_separators_masks(warps):
    rng = np.random.default_rng(0)
    dictionaries, states, magnitude = random_fit(rng)
    warping = dict(warps=warps, warped=(0,) if warps else ())
    terms = column_terms(dictionaries, states, magnitude, **warping)
    assert [t.shape for t in terms] == [(40, 6, 33), (40, 6, 33)]
    plain = dictionary_masks(dictionaries, states, magnitude, **warping)
    np.testing.assert_allclose(np.asarray(factored_shares(terms, jnp.asarray(states), {})), plain, atol=1e-5)
    theta = rng.normal(scale=0.5, size=dictionaries[0].shape).astype(np.float32)
    factored = dictionary_masks(dictionaries, states, magnitude, factors=(np.exp(theta), None), **warping)
    np.testing.assert_allclose(np.asarray(factored_shares(terms, jnp.asarray(states), {0: jnp.asarray(theta)})), factored,
                               atol=1e-5)
    assert np.abs(factored - plain).max() > 0.05  # the factors move the shares
    ones = dictionary_masks(dictionaries, states, magnitude, factors=tuple(np.ones_like(d) for d in dictionaries),
                            **warping)
    np.testing.assert_allclose(ones, plain, atol=1e-6)


def test_the_objective_equals_a_float64_reference():
    rng = np.random.default_rng(1)
    dictionaries, states, magnitude = random_fit(rng, n_frames=12, n_bins=9)
    terms = tuple(np.asarray(t, np.float64) for t in column_terms(dictionaries, states, magnitude))
    theta = rng.normal(scale=0.3, size=dictionaries[1].shape)
    mixture = rng.normal(size=(12, 9)) + 1j * rng.normal(size=(12, 9))
    sources = np.stack([0.4 * mixture, 0.6 * mixture]) + 0.1 * (rng.normal(size=(2, 12, 9)) + 0j)

    parts = []
    for k, t in enumerate(terms):
        factor = np.ones((12, 6, 9))
        if k == 1:
            for f in range(12):
                factor[f] = np.exp(np.concatenate([theta[s].T for s in states[f, 1]]))
        parts.append((t * factor).sum(axis=1))
    power = np.stack(parts) ** 2 + 1e-18
    masks = power / power.sum(axis=0)
    error = np.sum(np.abs(sources - masks * mixture) ** 2, axis=(1, 2)) / np.sum(np.abs(sources) ** 2, axis=(1, 2))
    want = error.mean() + PENALTY * np.mean(theta**2)

    data = (tuple(jnp.asarray(t, jnp.float32) for t in terms), jnp.asarray(states), jnp.asarray(mixture, jnp.complex64),
            jnp.asarray(sources, jnp.complex64))
    assert float(_objective((jnp.asarray(theta, jnp.float32),), data, (1,))) == pytest.approx(want, rel=1e-4)


def test_training_mixtures_set_the_first_source_at_each_offset_against_the_rest():
    rng = np.random.default_rng(2)
    sources = {"a": rng.normal(size=3000), "b": 3.0 * rng.normal(size=5000), "c": 0.1 * rng.normal(size=4000)}
    mixtures = training_mixtures(sources, 1000)
    assert len(mixtures) == len(OFFSETS_DB)
    for (mixture, parts), offset in zip(mixtures, OFFSETS_DB):
        assert parts.shape == (3, 5000) and mixture.shape == (5000,)  # repeated to the longest
        np.testing.assert_allclose(parts.sum(axis=0), mixture, atol=1e-5)
        power = np.mean(parts.astype(np.float64) ** 2, axis=1)
        assert power[1] == pytest.approx(power[2], rel=1e-5)  # the others at one power
        rest = np.mean(parts[1:].sum(axis=0).astype(np.float64) ** 2)
        assert 10 * np.log10(power[0] / rest) == pytest.approx(offset, abs=1e-4)
    assert training_mixtures({"a": np.ones(50_000), "b": np.ones(10)}, 1000)[0][0].shape == (20_000,)  # at most 20 s


def test_learnt_factors_lower_the_objective_for_the_sources_not_refined_and_save(tmp_path, capsys):
    rng = np.random.default_rng(3)
    sources = {"speech": low_tones(rng, 4), "noise": steady(rng, 4)}  # white noise: they share every bin
    plain = fit_separator(sources, RATE, reconstruction=False, **FAST)
    assert all(FACTORS not in m.emission for m in plain.models.values()) and plain.sets[0].factors is None
    members, objective = learnt_factors(plain, sources, ["speech"], steps=40, progress=True)
    done, err = len(OFFSETS_DB) + len(plain.members), capsys.readouterr().err  # each training mixture, each set
    assert "reconstruction factors" in err and f"{done}/{done}" in err
    assert objective.shape == (40,) and objective[-1] < 0.9 * objective[0]
    assert FACTORS in members[0]["speech"].emission and FACTORS not in members[0]["noise"].emission
    assert members[0]["speech"].emission[FACTORS].shape == members[0]["speech"].emission["dictionaries"].shape

    learnt = fit_separator(sources, RATE, **FAST)  # by default: white noise repeats itself
    assert learnt.options.training.reconstruction is True and learnt.refined_sources == ["noise"]
    assert FACTORS in learnt.models["speech"].emission and FACTORS not in learnt.models["noise"].emission
    assert learnt.sets[0].factors[1] is None
    mixture = low_tones(rng, 2) + steady(rng, 2)
    want = learnt.separate(mixture)
    assert np.abs(want["speech"] - plain.separate(mixture)["speech"]).max() > 1e-4
    learnt.save(tmp_path / "sep")
    again = load(tmp_path / "sep")
    assert again.options.training.reconstruction is True
    for name in want:
        np.testing.assert_allclose(again.separate(mixture)[name], want[name], atol=1e-5)
    # a format-15 folder (before factors) reads as learning none
    meta_path = tmp_path / "sep" / "separator.json"
    meta = json.loads(meta_path.read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["options"]["training"].pop("reconstruction") is True
    meta_path.write_text(json.dumps(meta | {"format_version": 15}))
    assert load(tmp_path / "sep").options.training.reconstruction is False
    # refined on a mixture (level, the noise's spectra), the speech keeps its factors
    np.testing.assert_array_equal(learnt.refine(mixture).models["speech"].emission[FACTORS],
                                  learnt.models["speech"].emission[FACTORS])
    # asked to, where nothing is refined, every source learns
    both = fit_separator({"a": low_tones(rng, 3), "b": steady(rng, 3)}, RATE, reconstruction=True, refine_iter=0,
                         **FAST)
    assert all(FACTORS in m.emission for m in both.models.values())
    # by default, no noise (talkers against each other) learns none
    talkers = fit_separator({"a": low_tones(rng, 3), "b": steady(rng, 3)}, RATE, **FAST)
    assert talkers.options.training.reconstruction is False and talkers.sets[0].factors is None


def test_repetition_is_the_stretches_long_term_spectra_against_the_whole():
    rng = np.random.default_rng(5)
    config = STFTConfig(256, 64)
    white = steady(rng, 4)
    assert repetition(white, config) < 0.5 < REPEAT_DB
    changing = np.concatenate([steady(rng, 2), low_tones(rng, 2)])  # white noise, then tones
    assert repetition(changing, config) > 3 * REPEAT_DB
    power = np.abs(stft(changing, config)).astype(np.float64) ** 2
    whole = 10 * np.log10(power.mean(axis=0) + 1e-20)
    held = whole >= whole.max() - 30
    halves = [10 * np.log10(h.mean(axis=0) + 1e-20) for h in (power[: -(-len(power) // 2)], power[-(-len(power) // 2):])]
    assert repetition(changing, config, parts=2) == pytest.approx(
        np.mean([np.sqrt(np.mean((h - whole)[held] ** 2)) for h in halves]), rel=1e-6)
    assert learns({"noise": white}, config, config) and not learns({"noise": white, "hum": changing}, config, config)
    assert not learns({}, config, config)  # no noise: talkers against each other
    hum = sum(np.sin(2 * np.pi * f * np.arange(4 * RATE) / RATE) for f in (100, 200, 300)).astype(np.float32)
    assert repetition(hum, config) < REPEAT_DB and not learns({"noise": hum}, config, config)  # lines
