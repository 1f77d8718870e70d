"""Pitch warps of the speech's state dictionaries: the warp itself, the per-frame choice, when it is on."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_separation import RATE, low_tones, mid_noise

from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.state_nmf import SELECT_ITERATIONS, SEPARATE_EXPONENT, dictionary_masks, warped_rows
from fhmm_ppl.separation.warps import (
    AUTO_SHIFTS,
    STEADY_LEVEL_DB,
    STEADY_SPREAD_DB,
    WARP_STEP,
    auto_shifts,
    steadiness,
    warp_columns,
    warp_factors,
)


def reference_warp(column: np.ndarray, factor: float) -> np.ndarray:
    """``w(f / a)`` by ``np.interp`` in float64 (zero past the last bin), scaled to sum to one."""
    bins = np.arange(column.shape[0], dtype=np.float64)
    warped = np.interp(bins / factor, bins, column.astype(np.float64), right=0.0)
    return warped / warped.sum()


def test_warp_factors_are_quarter_tones_around_one():
    factors = warp_factors(2)
    np.testing.assert_allclose(factors, [WARP_STEP**-2, WARP_STEP**-1, 1.0, WARP_STEP, WARP_STEP**2])
    np.testing.assert_allclose(WARP_STEP**24, 2.0)
    np.testing.assert_allclose(warp_factors(0), [1.0])


def test_warped_columns_equal_an_interpolation_reference_and_move_a_peak_with_the_factor():
    rng = np.random.default_rng(0)
    dictionaries = rng.gamma(1.0, size=(3, 64, 2)).astype(np.float32)
    dictionaries /= dictionaries.sum(axis=1, keepdims=True)
    factors = (0.9, 1.0, 1.06)
    got = np.asarray(warp_columns(dictionaries, factors))
    assert got.shape == (3, 3, 64, 2)
    for a, factor in enumerate(factors):
        for n in range(3):
            for r in range(2):
                np.testing.assert_allclose(got[a, n, :, r], reference_warp(dictionaries[n, :, r], factor), atol=1e-6)
    np.testing.assert_allclose(got[1], dictionaries, atol=1e-6)  # factor 1 leaves the columns as they are
    peak = np.zeros((1, 64, 1), np.float32)
    peak[0, 20, 0] = 1.0
    moved = np.asarray(warp_columns(peak, (1.1, 0.95)))[:, 0, :, 0]
    np.testing.assert_allclose(moved @ np.arange(64), [22.0, 19.0], atol=1e-4)  # the peak's centre, 20 a


def reference_warped_masks(dictionaries, states, magnitude, factors, warped, n_iter):
    """The per-frame warp choice in float64: one warped source after another (the others at their
    chosen warp, or at the factor nearest 1 before their turn), every warp's fit from
    ``SELECT_ITERATIONS`` more updates, the smallest KL divergence kept; the chosen fit continued to
    ``n_iter`` updates in all. ``states (T, K)``; returns the masks and each frame's warps ``(T, len(warped))``."""
    masks = np.zeros((len(dictionaries),) + magnitude.shape)
    chosen = np.zeros((magnitude.shape[0], len(warped)), int)
    r = dictionaries[0].shape[2]

    def updates(W, v, h, count):
        for _ in range(count):
            h = h * (W.T @ (v / (W @ h + 1e-9)) / (W.sum(axis=0) + 1e-9)) ** SEPARATE_EXPONENT
        return h

    def columns(t, warp):
        return np.concatenate([reference_warp_block(d[states[t, k]], factors[warp[k]]) if k in warp
                               else d[states[t, k]].astype(np.float64) for k, d in enumerate(dictionaries)], axis=1)

    for t, v in enumerate(np.asarray(magnitude, np.float64) + 1e-9):
        warp = {k: int(np.argmin(np.abs(np.log(factors)))) for k in warped}
        h = np.full(len(dictionaries) * r, v.sum() / (len(dictionaries) * r))
        for position, k in enumerate(warped):
            fits = []
            for index in range(len(factors)):
                W = columns(t, {**warp, k: index})
                fitted = updates(W, v, h, SELECT_ITERATIONS)
                model = W @ fitted + 1e-9
                fits.append((np.sum(v * np.log(v / model) - v + model), fitted))
            warp[k] = chosen[t, position] = int(np.argmin([f[0] for f in fits]))
            h = fits[warp[k]][1]
        W = columns(t, warp)
        h = updates(W, v, h, n_iter - len(warped) * SELECT_ITERATIONS)
        parts = np.stack([W[:, k * r:(k + 1) * r] @ h[k * r:(k + 1) * r] for k in range(len(dictionaries))]) ** 2 + 1e-18
        masks[:, t] = parts / parts.sum(axis=0)
    return masks, chosen


def reference_warp_block(columns: np.ndarray, factor: float) -> np.ndarray:
    return np.stack([reference_warp(columns[:, r], factor) for r in range(columns.shape[1])], axis=1)


def test_each_frame_takes_the_warp_a_float64_reference_takes_and_finds_a_shifted_harmonic_source():
    rng = np.random.default_rng(1)
    n_bins, n_frames = 96, 70  # more than one chunk, and a ragged one
    bins = np.arange(n_bins)
    # the "speech": harmonic combs; the noise: broad shapes
    comb = np.stack([sum(np.exp(-0.5 * ((bins - h * f0) / 0.8) ** 2) for h in range(1, 6)) + 1e-3
                     for f0 in (9.0, 11.0, 13.0)], axis=1)
    speech = np.stack([comb, comb[:, ::-1]])  # (2 states, F, 3)
    noise = rng.gamma(2.0, size=(2, n_bins, 3)) + 0.5
    dictionaries = tuple((d / d.sum(axis=1, keepdims=True)).astype(np.float32) for d in (speech, noise))
    factors = tuple(warp_factors(2))
    true_warp = rng.integers(0, len(factors), n_frames)
    states = np.stack([rng.integers(0, 2, n_frames), rng.integers(0, 2, n_frames)], axis=1)
    magnitude = np.stack([
        5.0 * reference_warp_block(dictionaries[0][states[t, 0]].astype(np.float64), factors[true_warp[t]])
        @ rng.gamma(2.0, size=3) + dictionaries[1][states[t, 1]] @ rng.gamma(2.0, size=3)
        for t in range(n_frames)]).astype(np.float32)
    got = np.asarray(dictionary_masks(dictionaries, states, magnitude, n_iter=22, warps=factors, warped=(0,)))
    want, chosen = reference_warped_masks(dictionaries, states, magnitude, factors, (0,), 22)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert np.mean(chosen[:, 0] == true_warp) > 0.9  # the reference itself finds the warp the frames were made with
    rows = warped_rows(tuple(map(jnp.asarray, dictionaries)), tuple(map(float, factors)), (0,))  # made once, as a separator does
    assert rows[0].shape == (len(factors), 2, 3, n_bins)
    np.testing.assert_allclose(np.asarray(rows[0][1, 1]).T, reference_warp_block(dictionaries[0][1], factors[1]), atol=1e-6)
    np.testing.assert_array_equal(dictionary_masks(dictionaries, states, magnitude, n_iter=22, warps=factors, warped=(0,),
                                                   rows=rows), got)
    plain = np.asarray(dictionary_masks(dictionaries, states, magnitude, n_iter=22))
    truth = np.stack([reference_warp_block(dictionaries[0][states[t, 0]].astype(np.float64), factors[true_warp[t]])
                      @ np.ones(3) for t in range(n_frames)])
    assert np.abs(got[0] - (truth > 0.05)).mean() < np.abs(plain[0] - (truth > 0.05)).mean()


def test_two_talkers_each_take_their_own_warp_as_a_float64_reference_does():
    rng = np.random.default_rng(5)
    n_bins, n_frames = 96, 40
    bins = np.arange(n_bins)

    def combs(f0s):
        return np.stack([sum(np.exp(-0.5 * ((bins - h * f0) / 0.8) ** 2) for h in range(1, 6)) + 1e-3 for f0 in f0s],
                        axis=1)

    talkers = (np.stack([combs((7.0, 8.0)), combs((9.0, 10.0))]), np.stack([combs((12.0, 13.5)), combs((15.0, 16.5))]))
    dictionaries = tuple((d / d.sum(axis=1, keepdims=True)).astype(np.float32) for d in talkers)
    factors = tuple(warp_factors(2))
    true_warp = rng.integers(0, len(factors), (n_frames, 2))
    states = rng.integers(0, 2, (n_frames, 2))
    magnitude = np.stack([sum(reference_warp_block(dictionaries[k][states[t, k]].astype(np.float64),
                                                   factors[true_warp[t, k]]) @ rng.gamma(2.0, size=2) for k in (0, 1))
                          for t in range(n_frames)]).astype(np.float32)
    got = np.asarray(dictionary_masks(dictionaries, states, magnitude, n_iter=22, warps=factors, warped=(0, 1)))
    want, chosen = reference_warped_masks(dictionaries, states, magnitude, factors, (0, 1), 22)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert np.mean(chosen == true_warp) > 0.8  # each talker's own warp, not one warp for both
    shared = np.asarray(dictionary_masks(dictionaries, states, magnitude, n_iter=22))
    truth = np.stack([reference_warp_block(dictionaries[0][states[t, 0]].astype(np.float64), factors[true_warp[t, 0]])
                      @ np.ones(2) for t in range(n_frames)])
    assert np.abs(got[0] - (truth > 0.05)).mean() < np.abs(shared[0] - (truth > 0.05)).mean()


def test_one_warp_of_factor_one_separates_exactly_as_no_warps():
    rng = np.random.default_rng(2)
    dictionaries = tuple((d / d.sum(axis=1, keepdims=True)).astype(np.float32)
                         for d in (rng.gamma(1.0, size=(3, 40, 4)), rng.gamma(1.0, size=(2, 40, 4))))
    states = np.stack([rng.integers(0, 3, 100), rng.integers(0, 2, 100)], axis=1)
    magnitude = rng.gamma(1.0, size=(100, 40)).astype(np.float32)
    np.testing.assert_allclose(dictionary_masks(dictionaries, states, magnitude, warps=(1.0,), warped=(0,)),
                               dictionary_masks(dictionaries, states, magnitude), atol=1e-5)


def steady(rng, seconds):
    return (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def bursts(rng, seconds):
    """Noise switched on and off four times a second: anything but steady."""
    n = int(seconds * RATE)
    return (steady(rng, seconds) * (np.arange(n) // (RATE // 8) % 2)).astype(np.float32)


def swelling(rng, seconds):
    """Noise whose level swells and fades by half its amplitude 1.5 times a second (a pedal stroke)."""
    n = int(seconds * RATE)
    return (steady(rng, seconds) * (1 + 0.5 * np.sin(2 * np.pi * 1.5 * np.arange(n) / RATE))).astype(np.float32)


def test_steadiness_of_gaussian_noise_is_the_log_of_an_exponential_and_swelling_or_bursts_are_not_steady():
    rng = np.random.default_rng(3)
    config = STFTConfig(n_fft=1024, hop_length=256)
    gaussian_spread = 10 * np.pi / (np.log(10) * np.sqrt(6))  # std of 10 log10 of an exponential variable
    for noise in (steady(rng, 10), mid_noise(rng, 10)):  # white, and band-limited: its empty bins do not count
        spread, swing = steadiness(noise, config)
        assert spread == pytest.approx(gaussian_spread, abs=0.15) and swing < 1.0
    assert steadiness(bursts(rng, 10), config)[0] > STEADY_SPREAD_DB + 3
    assert steadiness(swelling(rng, 10), config)[1] > STEADY_LEVEL_DB
    assert auto_shifts({"noise": steady(rng, 4)}, config) == AUTO_SHIFTS
    assert auto_shifts({"noise": swelling(rng, 4)}, config) == 0
    assert auto_shifts({"noise": steady(rng, 4), "hiss": bursts(rng, 4)}, config) == 0
    assert auto_shifts({}, config) == AUTO_SHIFTS  # no noise: talkers against each other
    assert auto_shifts({}, config, unknown=True) == 0  # a source learnt on the mixture may be any noise


def test_fit_separator_warps_the_speech_against_steady_noise_or_none_and_saves_the_choice(tmp_path):
    rng = np.random.default_rng(4)
    speech = low_tones(rng, 4)
    fast = dict(n_states=4, max_iter=5, n_models=1, state_components=2)
    steady_sep = fit_separator({"speech": speech, "noise": steady(rng, 4)}, RATE, **fast)
    assert steady_sep.options.inference.pitch_shifts == AUTO_SHIFTS
    assert steady_sep.mask.make.keywords["warped"] == (0,)  # the speech, not the noise
    assert len(steady_sep.sets[0].warped) == 1  # its dictionaries warped once, for every block's masks
    assert fit_separator({"speech": speech, "noise": bursts(rng, 4)}, RATE, **fast).options.inference.pitch_shifts == 0
    talkers = fit_separator({"a": speech, "b": low_tones(rng, 4)}, RATE, **fast)
    assert talkers.options.inference.pitch_shifts == AUTO_SHIFTS and talkers.mask.make.keywords["warped"] == (0, 1)
    semi = fit_separator({"speech": speech}, RATE, unknown=["noise"], unknown_states=2, **fast)
    assert semi.options.inference.pitch_shifts == 0  # the noise is learnt on each mixture: not known to be steady
    off = fit_separator({"speech": speech, "noise": steady(rng, 4)}, RATE, pitch_shifts=0, **fast)
    assert off.options.inference.pitch_shifts == 0 and off.mask.make.keywords["warps"] == ()
    assert off.sets[0].warped is None and len(talkers.sets[0].warped) == 2

    mixture = speech + steady(rng, 4)
    want = steady_sep.separate(mixture)
    steady_sep.save(tmp_path / "sep")
    again = load(tmp_path / "sep")
    assert again.options.inference.pitch_shifts == AUTO_SHIFTS
    for name in ("speech", "noise"):
        np.testing.assert_allclose(again.separate(mixture)[name], want[name], atol=1e-5)
    # a format-12 folder (before pitch warps) reads with none
    meta_path = tmp_path / "sep" / "separator.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 12
    del meta["options"]["inference"]["pitch_shifts"]
    meta_path.write_text(json.dumps(meta))
    assert load(tmp_path / "sep").options.inference.pitch_shifts == 0
