"""Pitch warps of the speech's state dictionaries: the warp itself, the per-frame choice, when it is on."""

import json

import numpy as np
import pytest

from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.state_nmf import SELECT_ITERATIONS, SEPARATE_EXPONENT, dictionary_masks
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
from test_separation import RATE, low_tones, mid_noise


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
    """The per-frame warp choice in float64: every warp's fit from ``SELECT_ITERATIONS`` updates, the
    smallest KL divergence kept, its fit continued to ``n_iter`` updates; ``states (T, K)``."""
    masks = np.zeros((len(dictionaries),) + magnitude.shape)
    chosen = np.zeros(magnitude.shape[0], int)

    def updates(W, v, h, count):
        for _ in range(count):
            h = h * (W.T @ (v / (W @ h + 1e-9)) / (W.sum(axis=0) + 1e-9)) ** SEPARATE_EXPONENT
        return h

    for t, v in enumerate(np.asarray(magnitude, np.float64) + 1e-9):
        fits = []
        for factor in factors:
            blocks = [reference_warp_block(d[states[t, k]], factor) if k in warped else d[states[t, k]].astype(np.float64)
                      for k, d in enumerate(dictionaries)]
            W = np.concatenate(blocks, axis=1)
            h = updates(W, v, np.full(W.shape[1], v.sum() / W.shape[1]), SELECT_ITERATIONS)
            model = W @ h + 1e-9
            fits.append((np.sum(v * np.log(v / model) - v + model), W, h))
        chosen[t] = int(np.argmin([f[0] for f in fits]))
        _, W, h = fits[chosen[t]]
        h = updates(W, v, h, n_iter - SELECT_ITERATIONS)
        r = dictionaries[0].shape[2]
        parts = np.stack([W[:, k * r:(k + 1) * r] @ h[k * r:(k + 1) * r] for k in range(len(dictionaries))]) ** 2
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
    assert np.mean(chosen == true_warp) > 0.9  # the reference itself finds the warp the frames were made with
    plain = np.asarray(dictionary_masks(dictionaries, states, magnitude, n_iter=22))
    truth = np.stack([reference_warp_block(dictionaries[0][states[t, 0]].astype(np.float64), factors[true_warp[t]])
                      @ np.ones(3) for t in range(n_frames)])
    assert np.abs(got[0] - (truth > 0.05)).mean() < np.abs(plain[0] - (truth > 0.05)).mean()


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
    assert auto_shifts({}, config) == 0


def test_fit_separator_warps_the_speech_against_steady_noise_only_and_saves_the_choice(tmp_path):
    rng = np.random.default_rng(4)
    speech = low_tones(rng, 4)
    fast = dict(n_states=4, max_iter=5, n_models=1, state_components=2)
    steady_sep = fit_separator({"speech": speech, "noise": steady(rng, 4)}, RATE, **fast)
    assert steady_sep.options.inference.pitch_shifts == AUTO_SHIFTS
    assert steady_sep.mask.make.keywords["warped"] == (0,)  # the speech, not the noise
    assert fit_separator({"speech": speech, "noise": bursts(rng, 4)}, RATE, **fast).options.inference.pitch_shifts == 0
    assert fit_separator({"a": speech, "b": low_tones(rng, 4)}, RATE, **fast).options.inference.pitch_shifts == 0
    off = fit_separator({"speech": speech, "noise": steady(rng, 4)}, RATE, pitch_shifts=0, **fast)
    assert off.options.inference.pitch_shifts == 0 and off.mask.make.keywords["warps"] == ()

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
