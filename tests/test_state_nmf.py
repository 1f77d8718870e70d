"""State dictionaries (the non-negative FHMM's states): KL-NMF, the per-frame masks, the separator."""

import numpy as np
import pytest
from test_separation import RATE, high_noise, low_tones, make_older, mid_noise

from fhmm_ppl.audio.features import stft
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.state_nmf import (
    SEPARATE_EXPONENT,
    SEPARATE_ITERATIONS,
    dictionary_masks,
    kl_nmf,
    state_dictionaries,
)


def kl(V, L):
    return float(np.sum(V * np.log(V / L) - V + L))


def test_kl_nmf_recovers_a_low_rank_non_negative_matrix():
    rng = np.random.default_rng(0)
    W_true, H_true = rng.gamma(1.0, size=(40, 3)), rng.gamma(1.0, size=(3, 60))
    V = W_true @ H_true + 1e-9
    W = kl_nmf(V, 3, np.random.default_rng(1), n_iter=400).astype(np.float64)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-5)
    # the best activations for the learnt dictionary reconstruct V almost exactly
    H = np.ones((3, V.shape[1]))
    for _ in range(500):
        H *= (W.T @ (V / (W @ H))) / W.sum(axis=0)[:, None]
    assert kl(V, W @ H) < 1e-3 * V.sum()
    assert kl(V, W @ H) < 0.01 * kl(V, np.outer(V.mean(axis=1), np.ones(V.shape[1])))


def test_state_dictionaries_learn_from_assigned_frames_and_fall_back_for_unvisited_states():
    rng = np.random.default_rng(2)
    power = rng.gamma(1.0, size=(50, 12))
    power[25:, :6] *= 1e-4  # state 1's frames have no energy in the low bins
    marginals = np.zeros((50, 3))
    marginals[:25, 0] = marginals[25:, 1] = 1.0  # state 2: no frame
    fallback = np.tile(np.arange(1.0, 13.0) ** 2, (3, 1))
    dicts = state_dictionaries(marginals, power, fallback, n_components=2, seed=0)
    assert dicts.shape == (3, 12, 2) and np.all(dicts >= 0)
    np.testing.assert_allclose(dicts.sum(axis=1), 1.0, atol=1e-5)
    assert dicts[1, :6].sum() < 0.05 and dicts[0, :6].sum() > 0.3  # magnitudes: 1e-4 power is 1e-2
    np.testing.assert_allclose(dicts[2, :, 0], np.arange(1.0, 13.0) / 78.0, rtol=1e-5)


def reference_masks(dictionaries, states, magnitude, n_iter, exponent=SEPARATE_EXPONENT):
    """The same multiplicative updates, frame by frame in float64; ``states (T, K)`` or ``(T, K, M)``."""
    states = states[:, :, None] if states.ndim == 2 else states
    masks = np.zeros((len(dictionaries),) + magnitude.shape)
    for t, v in enumerate(np.asarray(magnitude, np.float64) + 1e-9):
        W = np.concatenate([d[s] for k, d in enumerate(dictionaries) for s in states[t, k]], axis=1).astype(np.float64)
        h = np.full(W.shape[1], v.sum() / W.shape[1])
        for _ in range(n_iter):
            h *= (W.T @ (v / (W @ h + 1e-9)) / (W.sum(axis=0) + 1e-9)) ** exponent
        r = dictionaries[0].shape[2] * states.shape[2]
        parts = np.stack([W[:, k * r:(k + 1) * r] @ h[k * r:(k + 1) * r] for k in range(len(dictionaries))]) ** 2
        masks[:, t] = parts / parts.sum(axis=0)
    return masks


def test_dictionary_masks_equal_a_frame_by_frame_reference_and_split_the_mixture():
    rng = np.random.default_rng(3)
    dicts = [rng.gamma(1.0, size=(n, 20, 3)).astype(np.float32) for n in (4, 5, 2)]
    dicts = [d / d.sum(axis=1, keepdims=True) for d in dicts]
    n_frames = 300  # more than one chunk, and a ragged one
    states = np.stack([rng.integers(0, d.shape[0], n_frames) for d in dicts], axis=1)
    magnitude = rng.gamma(1.0, size=(n_frames, 20)).astype(np.float32)
    magnitude[7] = 0.0  # a silent frame
    got = np.asarray(dictionary_masks(tuple(dicts), states, magnitude, n_iter=30))
    want = reference_masks(dicts, states, magnitude, 30)
    np.testing.assert_allclose(np.delete(got, 7, axis=1), np.delete(want, 7, axis=1), atol=2e-4)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(np.isfinite(got)) and np.all(got >= 0)


def test_over_relaxed_activation_updates_lower_the_divergence_and_converge_as_plain_ones():
    """The separating updates' exponent keeps each update a descent of the KL divergence on frames
    of moderate dynamic range (checked in float64; an exponent of 2 is not a descent there, and
    beyond 1 none is guaranteed), and ``SEPARATE_ITERATIONS`` of them come as near the converged
    masks as 40 plain (exponent 1) updates, far nearer than as many plain updates."""
    rng = np.random.default_rng(6)
    dicts = [np.exp(rng.normal(size=(6, 40, 8))) for _ in range(2)]
    dicts = [d / d.sum(axis=1, keepdims=True) for d in dicts]

    def divergences(W, v, exponent, n_iter=60):
        h, out = np.full(W.shape[1], v.sum() / W.shape[1]), []
        for _ in range(n_iter):
            wh = W @ h
            out.append(np.sum(v * np.log(v / wh) - v + wh))
            h *= (W.T @ (v / wh) / W.sum(axis=0)) ** exponent
        return np.array(out)

    rises = {SEPARATE_EXPONENT: 0, 2.0: 0}
    for _ in range(40):
        W = np.concatenate([d[s] for d in dicts for s in rng.choice(6, 2, replace=False)], axis=1)
        v = np.exp(rng.normal(size=40))
        for exponent in rises:
            rises[exponent] += int(np.sum(np.diff(divergences(W, v, exponent)) > 1e-12))
    assert rises[SEPARATE_EXPONENT] == 0 and rises[2.0] > 0
    n_frames = 60
    states = np.stack([np.stack([rng.permutation(6)[:2] for _ in range(n_frames)]) for _ in dicts], axis=1)
    magnitude = np.exp(rng.normal(size=(n_frames, 40))).astype(np.float32)
    converged = reference_masks(dicts, states, magnitude, 1000, exponent=1.0)
    ours = np.asarray(dictionary_masks(tuple(d.astype(np.float32) for d in dicts), states, magnitude))
    np.testing.assert_allclose(ours, reference_masks(dicts, states, magnitude, SEPARATE_ITERATIONS), atol=2e-4)
    distance = {n: np.abs(reference_masks(dicts, states, magnitude, n, exponent=1.0) - converged).mean()
                for n in (SEPARATE_ITERATIONS, 40)}
    ours_distance = np.abs(ours - converged).mean()
    assert ours_distance < 0.6 * distance[SEPARATE_ITERATIONS] and ours_distance < 1.05 * distance[40]


def test_two_states_per_source_explain_a_frame_together_as_a_float64_reference_does():
    rng = np.random.default_rng(4)
    dicts = [rng.gamma(1.0, size=(n, 16, 2)).astype(np.float32) for n in (5, 3)]
    dicts = [d / d.sum(axis=1, keepdims=True) for d in dicts]
    n_frames = 70  # two halves on two threads, ragged chunks
    states = np.stack([np.stack([rng.permutation(d.shape[0])[:2] for _ in range(n_frames)]) for d in dicts], axis=1)
    magnitude = rng.gamma(1.0, size=(n_frames, 16)).astype(np.float32)
    got = np.asarray(dictionary_masks(tuple(dicts), states, magnitude, n_iter=25))
    np.testing.assert_allclose(got, reference_masks(dicts, states, magnitude, 25), atol=2e-4)
    # the second state matters: a frame made of source 0's second state's spectrum goes to source 0
    one = np.asarray(dictionary_masks(tuple(dicts), states[:, :, :1], magnitude, n_iter=25))
    assert np.abs(got - one).max() > 1e-2


def test_a_separator_explains_frames_with_its_two_most_probable_states_by_default():
    rng = np.random.default_rng(5)
    sep = fit_separator({"a": rng.standard_normal(RATE).astype(np.float32),
                         "b": np.sin(np.arange(RATE) * 0.3).astype(np.float32)}, RATE, n_states=3, max_iter=3,
                        n_models=1, state_components=2, likelihood_scale=0.01,  # soft posteriors
                        pitch_shifts=0)  # no noise source: the default would warp both
    mixture = rng.standard_normal(2 * RATE).astype(np.float32) + np.sin(np.arange(2 * RATE) * 0.3).astype(np.float32)
    spec = stft(mixture, sep.options.stft)
    posterior = sep.state_posteriors(spec)
    ranked = {n: np.sort(p, axis=1)[:, ::-1] for n, p in posterior.items()}
    clear = np.all([r[:, 1] - r[:, 2] > 1e-3 for r in ranked.values()], axis=0)  # no near tie for second place
    assert clear.sum() > 10
    top = np.stack([np.argsort(-posterior[n], axis=1)[:, :2] for n in ("a", "b")], axis=1)
    want = dictionary_masks(sep.sets[0].dictionaries, top, np.abs(spec).astype(np.float32))
    np.testing.assert_allclose(sep.gains(spec)[:, clear], want[:, clear], atol=1e-4)
    assert sep.options.inference.dictionary_states == 2


def test_disjoint_dictionaries_give_each_source_its_own_bins():
    low, high = np.zeros((1, 10, 2), np.float32), np.zeros((1, 10, 2), np.float32)
    low[0, :5] = 0.2
    high[0, 5:] = 0.2
    magnitude = np.concatenate([np.full((4, 5), 3.0), np.full((4, 5), 0.5)], axis=1).astype(np.float32)
    masks = np.asarray(dictionary_masks((low, high), np.zeros((4, 2), np.int32), magnitude))
    assert np.all(masks[0, :, :5] > 0.999) and np.all(masks[1, :, 5:] > 0.999)


def test_log_mel_separator_with_state_dictionaries_round_trips_and_reads_older_formats(tmp_path):
    rng = np.random.default_rng(4)
    train = {"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}
    sep = fit_separator(train, RATE, n_states=5, emission="log_mel", n_mels=24, max_iter=10, n_models=1,
                        state_components=3)
    assert sep.models["tones"].emission["dictionaries"].shape == (5, sep.options.features.n_fft // 2 + 1, 3)
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    est, gains = sep.separate(refs.sum(0), return_gains=True)
    np.testing.assert_allclose(gains.sum(0), 1.0, atol=1e-5)
    assert np.all(bss_eval(refs, np.stack([est["tones"], est["noise"]])).sdr > 12)
    folder = sep.save(tmp_path / "v5")
    gains = sep.gains(_stft(refs.sum(0), sep))  # the spectra as trained (separate refines the noise first)
    np.testing.assert_allclose(load(folder).gains(_stft(refs.sum(0), sep)), gains, atol=1e-6)
    # format 5 without dictionaries is damaged; format 4 (no dictionaries then) loads without them
    make_older(folder, 4, "state_components", "/dictionaries")
    old = load(folder)
    assert old.options.dictionary_size == 0 and old.options.soft_mask == "blend"
    assert np.abs(old.gains(_stft(refs.sum(0), sep)) - gains).max() > 1e-3  # masks straight from the states
    with pytest.raises(ValueError, match="state_components: Input should be greater than or equal to 0"):
        fit_separator(train, RATE, state_components=-1)


def _stft(signal, sep):
    from fhmm_ppl.audio.features import stft

    return stft(signal, sep.options.stft)


def test_state_dictionaries_with_mean_field_inference_on_three_sources():
    rng = np.random.default_rng(5)
    train = {"tones": low_tones(rng, 4), "mid": mid_noise(rng, 4), "high": high_noise(rng, 4)}
    refs = np.stack([low_tones(rng, 2), mid_noise(rng, 2), high_noise(rng, 2)])
    sep = fit_separator(train, RATE, n_states=4, max_iter=10, inference="mean_field", emission="complex_gaussian",
                        n_models=1, state_components=2)
    est, gains = sep.separate(refs.sum(0), return_gains=True)
    np.testing.assert_allclose(gains.sum(0), 1.0, atol=1e-5)
    assert np.all(bss_eval(refs, np.stack([est[n] for n in train])).sdr > 12)
