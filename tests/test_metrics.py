"""Metrics against mir_eval (the BSS-Eval v3 reference) and closed forms."""

import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from fhmm_ppl import metrics


def mir_eval_sources(references, estimates):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mir_eval.separation import bss_eval_sources

        sdr, sir, sar, _ = bss_eval_sources(references, estimates, compute_permutation=False)
    return sdr, sir, sar


def signals(rng, n_sources, n_samples, kind):
    t = np.arange(n_samples) / 8000
    if kind == "noise":
        refs = rng.normal(size=(n_sources, n_samples))
    elif kind == "tones":
        refs = np.stack([np.sin(2 * np.pi * (200 + 310 * i) * t + i) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) for i in range(n_sources)])
        refs += 0.01 * rng.normal(size=refs.shape)
    else:  # coloured noise bursts
        refs = np.stack([lfilter([1.0], [1.0, -0.9 + 0.3 * i], rng.normal(size=n_samples)) for i in range(n_sources)])
        refs *= (rng.uniform(size=(n_sources, 1)) + 0.2) * (np.sin(2 * np.pi * 2 * t) > -0.3)
    mixing = np.eye(n_sources) + rng.uniform(0.05, 0.4, (n_sources, n_sources)) * (1 - np.eye(n_sources))
    estimates = mixing @ refs
    estimates = np.stack([lfilter([1.0, 0.3, -0.1], [1.0], e) for e in estimates])  # filtering distortion
    estimates += 0.05 * rng.normal(size=estimates.shape) * refs.std()  # artefacts
    return refs, estimates


@pytest.mark.parametrize("n_sources", [2, 3])
@pytest.mark.parametrize("kind", ["noise", "tones", "bursts"])
def test_bss_eval_matches_mir_eval(rng, n_sources, kind):
    refs, estimates = signals(rng, n_sources, 6000, kind)
    ours = metrics.bss_eval(refs, estimates)
    sdr, sir, sar = mir_eval_sources(refs, estimates)
    np.testing.assert_allclose(ours.sdr, sdr, atol=0.01)
    np.testing.assert_allclose(ours.sir, sir, atol=0.01)
    np.testing.assert_allclose(ours.sar, sar, atol=0.01)


def test_bss_eval_keeps_the_given_order(rng):
    refs, estimates = signals(rng, 2, 4000, "noise")
    swapped = metrics.bss_eval(refs, estimates[::-1])
    assert np.all(swapped.sdr < 0)  # each estimate is scored against the other source


def test_bss_eval_rejects_bad_input(rng):
    refs, estimates = signals(rng, 2, 3000, "noise")
    with pytest.raises(ValueError, match="same shape"):
        metrics.bss_eval(refs, estimates[:, :-1])
    with pytest.raises(ValueError, match=r"estimates \[1\] are all zeros"):
        metrics.bss_eval(refs, np.stack([estimates[0], np.zeros(3000)]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.bss_eval(refs, np.where(np.arange(3000) == 5, np.nan, estimates))
    with pytest.raises(ValueError, match="needs at least 512 samples"):  # shorter than the distortion filter
        metrics.bss_eval(refs[:, :100], estimates[:, :100])


def test_si_sdr_of_silent_or_constant_signals(rng):
    ref = rng.normal(size=2000)
    assert metrics.si_sdr(ref, np.zeros(2000)) == -np.inf  # nothing of the target (was NaN)
    assert list(metrics.si_sdr(np.stack([ref, ref]), np.stack([0.5 * ref, np.full(2000, 0.3)]))) == [np.inf, -np.inf]
    with pytest.raises(ValueError, match="reference is constant"):  # a DC offset has no signal once centred
        metrics.si_sdr(np.full(2000, 1e-9), ref)


def test_si_sdr_snr_and_rms_closed_forms(rng):
    ref = rng.normal(size=4000)
    ref -= ref.mean()
    noise = rng.normal(size=4000)
    noise -= noise @ ref / (ref @ ref) * ref  # orthogonal to the reference
    noise -= noise.mean()  # still orthogonal: ref sums to zero
    est = 3.0 * ref + 0.5 * noise
    expected = 10 * np.log10(np.sum((3 * ref) ** 2) / np.sum((0.5 * noise) ** 2))
    assert metrics.si_sdr(ref, est) == pytest.approx(expected, abs=1e-6)
    assert metrics.si_sdr(ref, 10 * est) == pytest.approx(expected, abs=1e-6)  # scale invariant
    assert metrics.snr(ref, ref + 0.1 * ref) == pytest.approx(20.0, abs=1e-9)
    assert metrics.rms(np.full(100, -0.5)) == pytest.approx(0.5)
    assert metrics.rms_db(np.full(10, 1.0)) == pytest.approx(0.0)


def test_report_improvements_are_relative_to_the_mixture(rng):
    refs, estimates = signals(rng, 2, 5000, "bursts")
    mixture = refs.sum(0)
    report = metrics.separation_report(refs, estimates, mixture)
    floor = metrics.bss_eval(refs, np.stack([mixture, mixture]))
    np.testing.assert_allclose(report["sdr_improvement"], report["sdr"] - floor.sdr)
    perfect = metrics.separation_report(refs, refs, mixture)
    assert np.all(perfect["sdr_improvement"] > 40) and np.all(perfect["si_sdr"] > 100)
