"""The recording's level: the chains' stationary distributions against their long run, the level read
exactly off a gain and at zero off a model's own samples, and a separator that separates a recording
at any gain as one at its training level, saved as fitted."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_refinement import band_noise
from test_separation import RATE, low_tones

from fhmm_ppl import hmm
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.emissions import get_emission
from fhmm_ppl.separation.level import recording_level, scaled_members, source_levels, stationary
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.separation.storage import FORMAT_VERSION, SourceModel


def random_models(rng, n_states=(3, 4), n_bins=6):
    """Two chains' ``(log_init, log_trans, psd)`` with sticky transitions and spectra over two decades."""
    log_init = tuple(jnp.log(jnp.asarray(rng.dirichlet(np.ones(n)), jnp.float32)) for n in n_states)
    trans = [0.8 * np.eye(n) + 0.2 * rng.dirichlet(np.ones(n), size=n) for n in n_states]
    log_trans = tuple(jnp.log(jnp.asarray(t, jnp.float32)) for t in trans)
    psd = tuple(jnp.asarray(10 ** rng.uniform(-1, 1, (n, n_bins)), jnp.float32) for n in n_states)
    return log_init, log_trans, psd


def sampled_power(rng, log_init, log_trans, psd, n_frames):
    """``|x_tf|^2`` of complex-Gaussian frames drawn from the FHMM: states from the chains' prior,
    ``x_tf ~ CN(0, sum_k psd_k[s_tk, f])``."""
    path = np.asarray(hmm.sample_prior(jax.random.PRNGKey(int(rng.integers(1 << 30))), log_init, log_trans, n_frames))
    variance = sum(np.asarray(p)[path[:, k]] for k, p in enumerate(psd))  # (T, F)
    x = np.sqrt(variance / 2) * (rng.normal(size=variance.shape) + 1j * rng.normal(size=variance.shape))
    return (np.abs(x) ** 2).astype(np.float32)


def test_the_stationary_distribution_is_the_chains_long_run():
    rng = np.random.default_rng(0)
    for n in (1, 3, 7):
        trans = 0.9 * np.eye(n) + 0.1 * rng.dirichlet(np.ones(n), size=n)
        long_run = np.linalg.matrix_power(trans, 5000)[0]  # float64 reference: any start, many steps
        np.testing.assert_allclose(stationary(trans), long_run, atol=1e-10)


def test_the_level_reads_a_gain_exactly_and_a_models_own_samples_at_their_level():
    rng = np.random.default_rng(1)
    log_init, log_trans, psd = random_models(rng)
    member = {name: SourceModel(np.exp(np.asarray(li, np.float64)), np.exp(np.asarray(lt, np.float64)), {"psd": np.asarray(p)})
              for name, li, lt, p in zip(("a", "b"), log_init, log_trans, psd)}
    power = sampled_power(rng, log_init, log_trans, psd, 20000)
    assert recording_level([member, member], power) == pytest.approx(0.0, abs=0.3)  # E|x|^2 = V
    for gain_db in (-60.0, -7.5, 23.0):
        shifted = recording_level([member], power * np.float32(10 ** (gain_db / 10)))
        assert shifted - recording_level([member], power) == pytest.approx(gain_db, abs=1e-4)
    assert recording_level([member], np.zeros_like(power)) is None  # silence has no level
    assert recording_level([member], power * np.float32(1e-30)) == -96.0  # nor has what underflows


def test_a_sources_own_level_is_the_power_its_mask_gives_it_against_its_model():
    rng = np.random.default_rng(2)
    log_init, log_trans, psd = random_models(rng)
    members = [{name: SourceModel(np.exp(np.asarray(li, np.float64)), np.exp(np.asarray(lt, np.float64)),
                                  {"psd": np.asarray(p) * scale})
                for name, li, lt, p in zip(("a", "b"), log_init, log_trans, psd)} for scale in (1.0, 4.0)]
    power = rng.exponential(3.0, (50, 6)).astype(np.float32)
    masks = np.stack([np.full((50, 6), 0.5), np.zeros((50, 6))]).astype(np.float32)

    def model_db(member):  # float64 reference: the chain's long run, not the linear solve
        trans = np.linalg.matrix_power(member["a"].trans, 4000)[0]
        return 10 * np.log10(trans @ np.asarray(member["a"].emission["psd"], np.float64).mean(axis=1))

    expected = 10 * np.log10(np.mean(0.25 * power.astype(np.float64))) - np.mean([model_db(m) for m in members])
    levels = source_levels(members, masks, power, ["a", "b"])
    assert list(levels) == ["a"] and levels["a"] == pytest.approx(expected, abs=1e-3)  # b has no power
    assert source_levels(members, masks, power, ["a", "b"], skip=["a"]) == {}
    emission = get_emission("complex_gaussian")(SeparatorOptions().features, RATE)
    scaled = scaled_members(members, emission, {"a": -6.0})
    np.testing.assert_allclose(scaled[1]["a"].emission["psd"], members[1]["a"].emission["psd"] * 10 ** -0.6, rtol=1e-6)
    assert scaled[1]["b"] is members[1]["b"]


def low_noise(rng, seconds):
    """Noise band-limited to 0.1-1.2 kHz, over the tones, with a fast envelope."""
    return band_noise(rng, seconds, 100, 1200, lambda t: 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 0.9 * t)))


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(3)
    train = {"tones": low_tones(rng, 4), "noise": low_noise(rng, 4)}
    refs = np.stack([low_tones(rng, 3), low_noise(rng, 3)])
    return train, refs


@pytest.fixture(scope="module")
def separator(task):
    train, _ = task
    return fit_separator(train, RATE, n_states=4, max_iter=8, n_mels=24, n_models=2)


def tones_sdr(separator, refs, gain):
    """SDR (dB) of the tones separated from the mixture recorded at ``gain`` times the training level."""
    estimate = separator.separate(refs.sum(0) * np.float32(gain))["tones"] / gain
    return float(bss_eval(refs[:1], estimate[None]).sdr[0])


def test_a_recording_far_from_the_training_level_separates_as_one_at_it(separator, task):
    _, refs = task
    assert SeparatorOptions().inference.match_level
    at_level = separator.refine(refs.sum(0))
    assert abs(at_level.recording_level) < 1.0  # the test audio is as loud as the training audio
    quiet = separator.refine(refs.sum(0) * np.float32(10 ** (-30 / 20)))
    assert quiet.recording_level == pytest.approx(at_level.recording_level - 30.0, abs=1e-4)
    ratio = quiet.members[1]["tones"].emission["psd"] / separator.members[1]["tones"].emission["psd"]
    np.testing.assert_allclose(ratio, 10 ** (quiet.recording_level / 10), rtol=1e-4)
    plain = separator._with_options(match_level=False)
    reference = tones_sdr(separator, refs, 1.0)
    for gain in (10 ** (-30 / 20), 10 ** (25 / 20)):
        assert tones_sdr(separator, refs, gain) == pytest.approx(reference, abs=0.2)
    assert tones_sdr(separator, refs, 10 ** (25 / 20)) > tones_sdr(plain, refs, 10 ** (25 / 20)) + 1.0


def test_a_fitted_separator_keeps_its_level_when_saved_and_older_formats_never_match(separator, task, tmp_path):
    _, refs = task
    quiet = refs.sum(0) * np.float32(0.01)
    fitted = separator.refine(quiet)
    assert not fitted.options.inference.match_level and not fitted.matches_level
    loaded = load(fitted.save(tmp_path / "fitted"))
    np.testing.assert_allclose(loaded.separate(quiet)["tones"], separator.separate(quiet)["tones"], atol=1e-6)
    older = separator.save(tmp_path / "older") / "separator.json"
    meta = json.loads(older.read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["options"]["inference"].pop("match_level") is True
    older.write_text(json.dumps(meta | {"format_version": 14}))
    assert not load(older.parent).options.inference.match_level


def test_the_cli_matches_the_level_as_the_separator_says_or_as_told(separator, task, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    _, refs = task
    folder = separator.save(tmp_path / "model")
    mixture = refs.sum(0) * np.float32(10 ** (25 / 20))
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    plain = separator.with_level_matching(False)
    for args, expected in (([], separator), (["--no-match-level"], plain), (["--match-level"], separator)):
        out = tmp_path / f"out{'-'.join(args)}"
        result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        wave, _ = sf.read(out / "mix_tones.wav", dtype="float32")
        np.testing.assert_allclose(wave, expected.separate(mixture)["tones"], atol=1e-5)
    assert np.abs(plain.separate(mixture)["tones"] - separator.separate(mixture)["tones"]).max() > 1e-2


def test_sources_mixed_apart_take_levels_of_their_own(separator, task, tmp_path):
    """With ``source_levels`` each source not refined is scaled again by the level its first
    separation's mask reads: tones mixed 12 dB quieter or louder than trained, the noise as trained,
    read within 1.5 dB of that (the common level reads -1.6 and +7.9); the refined noise keeps its own.
    Saved fitted, and from the CLI."""
    _, refs = task
    own = separator.with_source_levels(True)
    assert own.fits_recording and not SeparatorOptions().inference.source_levels
    for db in (-12.0, 12.0):
        mixture = (refs * np.array([[10 ** (db / 20)], [1.0]], np.float32)).sum(0)
        fitted = own.refine(mixture)
        assert list(fitted.source_levels) == ["tones"] and not fitted.reads_source_levels
        common = separator.refine(mixture)
        ratio = fitted.members[1]["tones"].emission["psd"] / common.members[1]["tones"].emission["psd"]
        np.testing.assert_allclose(ratio, 10 ** (fitted.source_levels["tones"] / 10), rtol=1e-4)
        np.testing.assert_allclose(fitted.members[0]["noise"].emission["psd"], common.members[0]["noise"].emission["psd"])
        assert fitted.source_levels["tones"] + fitted.recording_level == pytest.approx(db, abs=1.5)
    loaded = load(fitted.save(tmp_path / "fitted"))
    np.testing.assert_allclose(loaded.separate(mixture)["tones"], own.separate(mixture)["tones"], atol=1e-6)
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    folder = separator.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(tmp_path / "out"),
                                      "--source-levels"])
    assert result.exit_code == 0, result.output
    wave, _ = sf.read(tmp_path / "out" / "mix_tones.wav", dtype="float32")
    np.testing.assert_allclose(wave, own.separate(mixture)["tones"], atol=1e-5)
    assert np.abs(wave - separator.separate(mixture)["tones"]).max() > 1e-3
