"""The log-max and log-mel separators on problems with known answers; their masks against references."""

import numpy as np
import pytest
from test_separation import RATE, high_noise, low_tones, make_older

from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator, load


def test_logmax_separator_separates_disjoint_spectra(tmp_path):
    rng = np.random.default_rng(1)
    # masks frame by frame (average_seconds 0): the state oracle below compares the states themselves
    sep = fit_separator({"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}, RATE, n_states=6,
                        emission="logmax", max_iter=15, n_models=1, average_seconds=0.0)
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    est = sep.separate(refs.sum(0))
    assert np.all(bss_eval(refs, np.stack([est["tones"], est["noise"]])).sdr > 15)
    loaded = load(sep.save(tmp_path / "lm"))
    np.testing.assert_allclose(loaded.separate(refs.sum(0))["tones"], est["tones"], atol=1e-5)
    from fhmm_ppl.audio.features import stft

    spec = stft(refs.sum(0), sep.options.stft)
    oracle = sep.state_oracle_gains(spec, [stft(r, sep.options.stft) for r in refs])
    assert np.mean(np.abs(oracle - sep.gains(spec))) < 0.02


def test_log_mel_separator_separates_disjoint_spectra_and_its_masks_sum_to_one(tmp_path):
    from fhmm_ppl.audio.features import stft

    rng = np.random.default_rng(1)
    train = {"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}
    sep = fit_separator(train, RATE, n_states=6, emission="log_mel", n_mels=32, max_iter=15, n_models=1)
    assert sep.models["tones"].emission["means"].shape == (6, 32)  # states model mel bands, not STFT bins
    refs = np.stack([low_tones(rng, 2), high_noise(rng, 2)])
    est, gains = sep.separate(refs.sum(0), return_gains=True)
    assert gains.shape == (2,) + stft(refs[0], sep.options.stft).shape
    np.testing.assert_allclose(gains.sum(0), 1.0, atol=1e-5)
    assert np.all(bss_eval(refs, np.stack([est["tones"], est["noise"]])).sdr > 12)
    loaded = load(sep.save(tmp_path / "mel"))
    np.testing.assert_allclose(loaded.separate(refs.sum(0))["noise"], est["noise"], atol=1e-5)
    one_band = np.zeros((1, 1, 32), np.float32)
    one_band[..., 5] = 1.0
    spread = sep.emission.spread(one_band)[0, 0]
    assert spread.max() <= 1.0 and spread.min() >= 0.0 and 0 < np.count_nonzero(spread > 1e-3) < spread.size // 4


def test_log_mel_state_spectra_and_the_three_soft_mask_kinds(tmp_path):
    import jax.numpy as jnp

    from fhmm_ppl import hmm
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.hmm.emissions import logmax_log_lik
    from fhmm_ppl.separation import Separator

    rng = np.random.default_rng(2)
    train = {"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}
    sep = fit_separator(train, RATE, n_states=5, emission="log_mel", n_mels=24, max_iter=10, n_models=1,
                        state_components=0)  # masks straight from the states (dictionaries: test_state_nmf)
    assert sep.options.soft_mask == "blend"
    # each state's spectrum: the training STFT power averaged with the trained HMM's state posteriors
    model, spec = sep.models["tones"], stft(train["tones"], sep.options.stft)
    log_lik = logmax_log_lik(jnp.asarray(sep.emission.frames(spec)), [jnp.asarray(model.emission["means"])],
                             [jnp.asarray(model.emission["variances"])])
    post = np.asarray(hmm.posteriors([jnp.log(jnp.asarray(model.init))], [jnp.log(jnp.asarray(model.trans))],
                                     log_lik).marginals[0], np.float64)
    expected = post.T @ np.abs(spec) ** 2 / post.sum(0)[:, None]
    np.testing.assert_allclose(model.emission["psd"], np.maximum(expected, model.emission["psd"].min()), rtol=2e-3)
    # blend = the mean of dominance and Wiener masks; every kind splits the mixture
    mixture = stft(low_tones(rng, 2) + high_noise(rng, 2), sep.options.stft)
    # frame by frame (average_seconds 0): averaging the noise's power is not linear in the masks
    kinds = {kind: Separator(sep.members, RATE, sep.options.replace(soft_mask=kind, average_seconds=0.0)).gains(mixture)
             for kind in ("dominance", "wiener", "blend")}
    np.testing.assert_allclose(kinds["blend"], 0.5 * (kinds["dominance"] + kinds["wiener"]), atol=1e-6)
    assert np.abs(kinds["dominance"] - kinds["wiener"]).max() > 0.05
    for gains in kinds.values():
        np.testing.assert_allclose(gains.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="soft_mask: Input should be 'blend', 'dominance' or 'wiener'"):
        sep.options.replace(soft_mask="soft")
    # a format-3 folder (no state spectra) loads as it ran, with dominance masks; a format-4 one without them is damaged
    folder = sep.save(tmp_path / "v3")
    make_older(folder, 3, "logmax_mask", "/psd")
    old = load(folder)
    assert old.options.soft_mask == "dominance"
    old = Separator(old.members, RATE, old.options.replace(average_seconds=0.0))
    np.testing.assert_allclose(old.gains(mixture), kinds["dominance"], atol=1e-6)


def test_two_source_logmax_masks_equal_the_posterior_weighted_dominance():
    """The fused two-source path of the dominance masks against the general formula
    ``sum_s p(s | y) P(source k dominates | s, y_tf)``, over a length that is no multiple of its chunk."""
    import jax.numpy as jnp

    from fhmm_ppl.hmm import emissions
    from fhmm_ppl.separation.masks import DOMINANCE_CHUNK as MASK_CHUNK
    from fhmm_ppl.separation.masks import _dominance_from_joint as masks_from_joint

    rng = np.random.default_rng(5)
    n_frames, n_bins, n_states = MASK_CHUNK * 2 + 3, 7, (3, 5)
    means = tuple(jnp.asarray(rng.normal(size=(n, n_bins)), jnp.float32) for n in n_states)
    variances = tuple(jnp.asarray(rng.uniform(0.2, 2.0, (n, n_bins)), jnp.float32) for n in n_states)
    log_mag = jnp.asarray(rng.normal(size=(n_frames, n_bins)) * 2, jnp.float32)
    joint = rng.dirichlet(np.full(15, 0.3), size=n_frames).astype(np.float32)
    masks = np.asarray(masks_from_joint(jnp.asarray(joint), log_mag, means, variances))
    dom = np.asarray(emissions.logmax_dominance(*emissions.logmax_terms(log_mag, means, variances)))
    ref = np.einsum("tp,ktpf->ktf", joint, dom.reshape(2, n_frames, 15, n_bins))
    np.testing.assert_allclose(masks, ref, atol=2e-6)
