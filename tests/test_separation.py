"""The FHMM separator on problems with known answers; save/load; silent input."""

import numpy as np
import pytest

from fhmm_ppl import runtime
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator, load

RATE = 8000


def low_tones(rng, seconds):
    """Notes from a few low frequencies (< 1 kHz), switching every 0.25 s."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    notes = rng.choice([220.0, 330.0, 440.0, 550.0], size=n // 2000 + 1)
    freq = np.repeat(notes, 2000)[:n]
    return (0.3 * np.sin(2 * np.pi * np.cumsum(freq) / RATE) * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)


def high_noise(rng, seconds):
    """Noise band-limited to 2.5-3.5 kHz with a slow envelope."""
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < 2500) | (freqs > 3500)] = 0
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * np.arange(n) / RATE)
    sig = np.fft.irfft(spec, n) * env
    return (0.3 * sig / sig.std()).astype(np.float32)


def mid_noise(rng, seconds):
    """Noise band-limited to 1.2-2 kHz."""
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < 1200) | (freqs > 2000)] = 0
    sig = np.fft.irfft(spec, n)
    return (0.3 * sig / sig.std()).astype(np.float32)


def flat_options(options) -> dict:
    """The options as formats 2-5 stored them: flat keywords, ``mask: wiener`` for soft masks."""
    return {"n_states": options.model.n_states, "emission": options.model.emission, "trainer": options.training.method,
            "max_iter": options.training.max_iter, "inference": options.inference.method,
            "mask": "wiener" if options.inference.mask == "soft" else "binary",
            "logmax_mask": options.inference.soft_mask, "n_fft": options.features.n_fft,
            "hop_length": options.features.hop_length, "n_mels": options.features.n_mels, "seed": options.seed,
            "n_init": options.training.n_init, "n_models": options.training.n_models,
            "likelihood_scale": options.inference.likelihood_scale,
            "state_components": options.model.state_components, "priors": options.model.prior_specs()}


def make_older(folder, version: int, option: str, array_suffix: str) -> None:
    """Turn a saved separator into what format ``version`` wrote: flat options without ``option``
    and no arrays ending in ``array_suffix``. Between the two steps (arrays first) the folder is a
    current-format one missing those arrays."""
    import json

    with np.load(folder / "params.npz") as data:
        arrays = {key: data[key] for key in data.files if not key.endswith(array_suffix)}
    np.savez(folder / "params.npz", **arrays)
    with pytest.raises(ValueError, match=f"damaged or incomplete saved separator.*{array_suffix.strip('/')}"):
        load(folder)
    meta = json.loads((folder / "separator.json").read_text())
    meta["format_version"] = version
    meta["options"] = flat_options(load_options(meta))
    del meta["options"][option]
    (folder / "separator.json").write_text(json.dumps(meta))


def load_options(meta: dict):
    from fhmm_ppl.separation import SeparatorOptions

    return SeparatorOptions.model_validate(meta["options"])


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    sep = fit_separator({"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}, RATE, n_states=8, max_iter=20,
                        emission="complex_gaussian", n_models=1)
    test = np.stack([low_tones(rng, 3), high_noise(rng, 3)])
    return sep, test


def test_disjoint_spectra_separate_cleanly(trained):
    sep, refs = trained
    mixture = refs.sum(0)
    est = sep.separate(mixture)
    assert list(est) == ["tones", "noise"]
    estimates = np.stack([est["tones"], est["noise"]])
    scores = bss_eval(refs, estimates)
    assert np.all(scores.sdr > 20), scores
    # Wiener gains sum to one: the estimates add back up to the mixture.
    np.testing.assert_allclose(estimates.sum(0), mixture, atol=1e-4)


def test_separating_keeps_numpy_blas_on_one_thread_and_gives_it_back(trained, monkeypatch):
    from test_runtime import blas_threads
    from threadpoolctl import threadpool_limits

    from fhmm_ppl.separation import phase as module

    sep, refs = trained
    seen = []
    istft = module.istft

    def watched_istft(*args, **kwargs):  # NumPy work inside separate(), after the masks
        seen.append(blas_threads())
        return istft(*args, **kwargs)

    monkeypatch.setattr(module, "istft", watched_istft)
    with threadpool_limits(limits=2, user_api="blas"):
        sep.separate(refs.sum(0))
        after = blas_threads()
    assert seen and all(threads == {1} for threads in seen)
    assert after == {2}


@pytest.mark.skipif(runtime.memory_maps() is None, reason="needs Linux's /proc")
def test_training_first_drops_compiled_programs_in_a_crowded_process(monkeypatch):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    sources = {"tones": low_tones(rng, 2), "noise": high_noise(rng, 2)}
    kernel = jax.jit(lambda x: jnp.cumsum(x) * 3.0)
    for share, kept in ((1.0, 1), (0.0, 0)):  # never crowded; always crowded
        kernel(jnp.ones(4)).block_until_ready()
        monkeypatch.setattr(runtime, "MEMORY_MAP_SHARE", share)
        fit_separator(sources, RATE, n_states=4, max_iter=2, emission="complex_gaussian", n_models=1)
        assert kernel._cache_size() == kept


def test_integer_pcm_is_read_at_the_levels_of_float_audio(trained):
    """An int16 mixture (as scipy.io.wavfile returns it) separates like the same audio as floats:
    the complex-Gaussian model depends on level, so raw integers would be 32768 times too loud."""
    sep, refs = trained
    scale = 0.9 / np.abs(refs.sum(0)).max()  # within int16's range
    refs = refs * scale
    pcm = np.round(refs.sum(0) * 32768).astype(np.int16)
    from_pcm, from_float = sep.separate(pcm), sep.separate(pcm / 32768.0)
    for name in sep.names:
        np.testing.assert_allclose(from_pcm[name], from_float[name], atol=1e-5)
    assert np.all(bss_eval(refs, np.stack([from_pcm[n] for n in sep.names])).sdr > 15)


def test_save_load_round_trip(trained, tmp_path):
    sep, refs = trained
    mixture = refs.sum(0)
    loaded = load(sep.save(tmp_path / "model"))
    assert loaded.names == sep.names and loaded.options == sep.options
    for name, wave in sep.separate(mixture).items():
        np.testing.assert_allclose(loaded.separate(mixture)[name], wave, atol=1e-6)


def test_silent_and_quiet_mixtures_give_finite_output(trained):
    sep, refs = trained
    for mixture in (np.zeros(4000, np.float32), 1e-9 * refs.sum(0)):
        for wave in sep.separate(mixture).values():
            assert np.all(np.isfinite(wave))


def test_bad_input_is_rejected(trained, tmp_path):
    sep, _ = trained
    with pytest.raises(ValueError, match="mono"):
        sep.separate(np.zeros((100, 2)))
    with pytest.raises(ValueError, match="fewer than one frame"):
        sep.separate(np.ones(10))
    with pytest.raises(ValueError, match="not a saved separator"):
        load(tmp_path)
    with pytest.raises(ValueError, match="at least two sources"):
        fit_separator({"only": np.ones(4000)}, RATE)
    noise = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    with pytest.raises(ValueError, match="sources must map each source's name to its training audio, got list"):
        fit_separator([noise, noise], RATE)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        fit_separator({"a": noise, "b": noise}, 0)
    with pytest.raises(ValueError, match="source 'b': training audio contains NaN"):
        fit_separator({"a": noise, "b": np.where(np.arange(4000) == 7, np.nan, noise)}, RATE, n_states=8)
    with pytest.raises(ValueError, match="source 'a': 0.50 s of training audio give 16 frames, fewer than the 20 states"):
        fit_separator({"a": noise, "b": noise}, RATE, n_states=20)
    folder = sep.save(tmp_path / "damaged")
    (folder / "params.npz").unlink()
    with pytest.raises(ValueError, match="damaged or incomplete saved separator"):
        load(folder)
    sep.save(folder)
    (folder / "separator.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged or incomplete saved separator \\(JSONDecodeError"):
        load(folder)


def test_baselines_and_oracle_bracket_the_problem(trained):
    from fhmm_ppl.audio import STFTConfig
    from fhmm_ppl.separation.baselines import apply_masks, fit_supervised_nmf, oracle_masks

    rng = np.random.default_rng(5)
    sep, refs = trained
    mixture = refs.sum(0)
    config = STFTConfig(512, 128)
    for kind in ("irm", "ibm"):
        masks = oracle_masks(refs, mixture, config, kind)
        np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-6)
        assert np.all(bss_eval(refs, apply_masks(mixture, masks, config)).sdr > 20)
    nmf = fit_supervised_nmf({"tones": low_tones(rng, 4), "noise": high_noise(rng, 4)}, n_components=8, config=config)
    est = nmf.separate(mixture)
    assert list(est) == ["tones", "noise"]
    assert np.all(bss_eval(refs, np.stack(list(est.values()))).sdr > 10)


def test_state_oracle_masks_match_inference_where_states_are_plain(trained):
    """With disjoint spectra the mixture reveals every source's states, so masks from the states found
    in the clean sources equal the masks inferred from the mixture; both separate cleanly."""
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.separation import Separator
    from fhmm_ppl.separation.baselines import apply_masks

    sep, refs = trained
    sep = Separator(sep.members, RATE, sep.options.replace(average_seconds=0.0))  # the states' own masks, frame by frame
    mixture = refs.sum(0)
    spec = stft(mixture, sep.options.stft)
    oracle = sep.state_oracle_gains(spec, [stft(r, sep.options.stft) for r in refs])
    inferred = sep.gains(spec)
    assert oracle.shape == inferred.shape
    np.testing.assert_allclose(oracle.sum(0), 1.0, atol=1e-5)
    assert np.mean(np.abs(oracle - inferred)) < 0.01
    assert np.all(bss_eval(refs, apply_masks(mixture, oracle, sep.options.stft)).sdr > 20)
    with pytest.raises(ValueError, match="one source STFT per source"):
        sep.state_oracle_gains(spec, [spec])
    with pytest.raises(ValueError, match="differs from the mixture"):
        sep.state_oracle_gains(spec, [spec, spec[:-1]])


def reference_wiener_gains(sep, spec):
    """Posterior-weighted Wiener gains ``(K, T, F)`` in float64 from the chunked smoother's joint
    posterior (the other exact code path), for checking the separator's fused one."""
    import jax.numpy as jnp

    from fhmm_ppl import hmm
    from fhmm_ppl.hmm.emissions import complex_gaussian_log_lik

    log_init, log_trans, psd = sep.sets[0].log_init, sep.sets[0].log_trans, sep.sets[0].params.psd
    log_lik = complex_gaussian_log_lik(jnp.asarray(np.abs(spec) ** 2, jnp.float32), psd)
    joint = np.asarray(hmm.posteriors(log_init, log_trans, log_lik * sep.options.evidence_scale, joint=True).joint,
                       np.float64)
    psd = [np.asarray(p, np.float64) for p in psd]
    grids = np.meshgrid(*[np.arange(p.shape[0]) for p in psd], indexing="ij")
    own = [p[g.ravel()] for p, g in zip(psd, grids)]  # K x (prod N, F)
    flat = joint.reshape(joint.shape[0], -1)
    return np.stack([flat @ (o / sum(own)) for o in own])


def test_exact_wiener_gains_equal_the_posterior_weighted_shares(trained):
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.separation import Separator

    sep, refs = trained
    spec = stft(refs.sum(0), sep.options.stft)
    plain = Separator(sep.members, RATE, sep.options.replace(average_seconds=0.0))  # masks frame by frame
    np.testing.assert_allclose(plain.gains(spec), reference_wiener_gains(sep, spec), atol=2e-5)
    assert sep.gains(spec).flags.writeable  # the caller's own array, not a view of a device buffer
    rng = np.random.default_rng(5)
    train = {"tones": low_tones(rng, 2), "mid": mid_noise(rng, 2), "high": high_noise(rng, 2)}
    three = fit_separator(train, RATE, n_states=3, max_iter=5, inference="exact", emission="complex_gaussian",
                          n_models=1)
    spec = stft(low_tones(rng, 1) + mid_noise(rng, 1) + high_noise(rng, 1), three.options.stft)
    np.testing.assert_allclose(three.gains(spec), reference_wiener_gains(three, spec), atol=2e-5)


def test_separate_in_a_fresh_process(trained, tmp_path):
    # Regression: a fresh interpreter imports the inference modules lazily; none may be first imported
    # inside a jitted function (module-level code would then run under the tracer).
    import subprocess
    import sys

    import soundfile as sf

    sep, refs = trained
    folder = sep.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", refs.sum(0), RATE, subtype="FLOAT")
    out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "separate", str(folder), str(tmp_path / "mix.wav"),
                          "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wave, _ = sf.read(tmp_path / "out" / "mix_tones.wav")
    np.testing.assert_allclose(wave, sep.separate(refs.sum(0))["tones"], atol=1e-5)


def test_likelihood_scale_tempers_the_posterior_over_joint_states(trained):
    import jax.numpy as jnp

    from fhmm_ppl import hmm
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.hmm.emissions import complex_gaussian_log_lik
    from fhmm_ppl.separation import Separator, SeparatorOptions

    sep, refs = trained
    assert sep.options.evidence_scale == 128 / 512  # the default: hop_length / n_fft
    spec = stft(refs.sum(0), sep.options.stft)
    log_lik = complex_gaussian_log_lik(jnp.asarray(np.abs(spec) ** 2), sep.sets[0].params.psd)
    log_init, log_trans = sep.sets[0].log_init, sep.sets[0].log_trans
    for scale in (1.0, 0.3):
        got = Separator(sep.models, RATE, sep.options.replace(likelihood_scale=scale)).state_posteriors(spec)
        want = hmm.posteriors(log_init, log_trans, log_lik * scale).marginals
        for name, marginal in zip(sep.names, want):  # the separator folds the scale into -1/V: float32 rounding
            np.testing.assert_allclose(got[name], marginal, atol=1e-4)
    # a smaller scale gives a less confident posterior (higher entropy), as tempering should
    entropy = lambda p: float(-np.sum(p * np.log(np.maximum(p, 1e-30))))
    plain = Separator(sep.models, RATE, sep.options.replace(likelihood_scale=1.0))
    assert entropy(sep.state_posteriors(spec)["noise"]) > entropy(plain.state_posteriors(spec)["noise"])
    for bad in (0, -1.0, float("nan"), True, "high"):
        with pytest.raises(ValueError, match="likelihood_scale: "):
            SeparatorOptions.from_flat(likelihood_scale=bad)


def test_an_ensemble_averages_its_models_masks_and_round_trips(tmp_path):
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.separation import Separator

    rng = np.random.default_rng(5)
    train = {"tones": low_tones(rng, 3), "noise": high_noise(rng, 3)}
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    ensemble = fit_separator(train, RATE, n_states=4, max_iter=5, n_models=2, n_init=2, seed=3,
                             emission="complex_gaussian", n_fft=512, hop_length=128)
    assert len(ensemble.members) == 2 and ensemble.models is ensemble.members[0]
    # the second model set continues the seeds after the first one's n_init runs
    second = fit_separator(train, RATE, n_states=4, max_iter=5, n_init=2, seed=5, emission="complex_gaussian",
                           n_models=1, n_fft=512, hop_length=128)
    for name in train:
        np.testing.assert_allclose(ensemble.members[1][name].emission["psd"], second.models[name].emission["psd"], rtol=1e-5)
        assert not np.allclose(ensemble.members[0][name].emission["psd"], ensemble.members[1][name].emission["psd"])
    spec = stft(refs.sum(0), ensemble.options.stft)
    singles = [Separator(member, RATE, ensemble.options).gains(spec) for member in ensemble.members]
    np.testing.assert_allclose(ensemble.gains(spec), np.mean(singles, axis=0), atol=1e-6)
    loaded = load(ensemble.save(tmp_path / "ensemble"))
    assert len(loaded.members) == 2 and loaded.options == ensemble.options
    np.testing.assert_allclose(loaded.gains(spec), ensemble.gains(spec), atol=1e-6)
    assert np.all(bss_eval(refs, np.stack(list(loaded.separate(refs.sum(0)).values()))).sdr > 15)
    with pytest.raises(ValueError, match="n_models: Input should be greater than or equal to 1"):
        fit_separator(train, RATE, n_models=0)
    with pytest.raises(ValueError, match="every model set must have the sources"):
        Separator([ensemble.members[0], {"noise": ensemble.members[1]["noise"]}], RATE, ensemble.options)


def test_separators_saved_in_format_2_still_load(trained, tmp_path):
    import json

    sep, refs = trained
    folder = sep.save(tmp_path / "old")
    meta = json.loads((folder / "separator.json").read_text())
    meta["format_version"] = 2
    meta["options"] = flat_options(load_options(meta))
    del meta["model_sets"], meta["options"]["n_models"], meta["options"]["likelihood_scale"]
    (folder / "separator.json").write_text(json.dumps(meta))
    loaded = load(folder)
    assert len(loaded.members) == 1 and loaded.options == sep.options.replace(likelihood_scale=1.0, n_models=1, refine_iter=0,
                                                                            average_seconds=0.0, match_level=False)
    for name in sep.names:
        np.testing.assert_array_equal(loaded.models[name].emission["psd"], sep.models[name].emission["psd"])
