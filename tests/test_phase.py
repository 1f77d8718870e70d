"""A phase of its own for line noise (``separation.phase``): the phase retrieval, the split, when it is on."""

import json

import librosa
import numpy as np
import pytest
from test_separation import RATE, low_tones, mid_noise

from fhmm_ppl.audio.demo import noise as demo_noise
from fhmm_ppl.audio.features import STFTConfig, istft, stft
from fhmm_ppl.audio.real import jittery_hum
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.phase import PHASE_ITERATIONS, StreamSynthesis, consistent_estimate, unit_phasors, waveforms
from fhmm_ppl.separation.resolution import line_sources

CONFIG = STFTConfig(256, 64)


def hum(seconds: float, seed: int) -> np.ndarray:
    return jittery_hum(seconds, seed, RATE).astype(np.float32)


def test_phase_retrieval_equals_librosas_griffin_lim_and_leaves_a_consistent_stft_alone():
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=4000) * np.hanning(4000)).astype(np.float32)
    magnitude = np.abs(stft(audio, CONFIG))
    gain = rng.uniform(0.2, 1.0, size=magnitude.shape)
    # from phase zero (a real, positive "mixture"), plain Griffin-Lim without momentum is librosa's
    for n_iter in (1, PHASE_ITERATIONS, 5):
        ours = consistent_estimate(gain, magnitude.astype(np.complex64), CONFIG, 4000, n_iter)
        theirs = librosa.griffinlim((gain * magnitude).T, n_iter=n_iter, hop_length=CONFIG.hop_length,
                                    n_fft=CONFIG.n_fft, window=CONFIG.window, length=4000, momentum=0.0, init=None)
        np.testing.assert_allclose(ours, theirs, atol=2e-5 * np.abs(theirs).max())
    # a whole signal's own STFT is consistent: retrieval keeps it
    np.testing.assert_allclose(consistent_estimate(np.ones_like(magnitude), stft(audio, CONFIG), CONFIG, 4000),
                               audio, atol=1e-5)


def test_unit_phasors_are_the_exponential_of_the_angle_and_one_at_zero():
    rng = np.random.default_rng(1)
    spec = (rng.normal(size=(7, 5)) + 1j * rng.normal(size=(7, 5))).astype(np.complex64) * 10.0 ** rng.uniform(-30, 3, (7, 5))
    spec[0, :2] = 0
    for values in (spec, spec.astype(np.complex128)):
        phasors = unit_phasors(values)
        assert phasors.dtype == values.dtype
        np.testing.assert_allclose(phasors, np.exp(1j * np.angle(values.astype(np.complex128))), atol=1e-6)


def test_a_tones_phase_of_its_own_is_nearer_the_tone_than_the_mixtures_phase():
    rng = np.random.default_rng(1)
    t = np.arange(3 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 230 * t) + 0.2 * np.sin(2 * np.pi * 460 * t + 1.0)).astype(np.float32)
    noise = (0.4 * rng.normal(size=t.shape[0])).astype(np.float32)  # white: it shares the tone's bins
    mixture = tone + noise
    spec = stft(mixture, CONFIG)
    power = np.stack([np.abs(stft(tone, CONFIG)) ** 2, np.abs(stft(noise, CONFIG)) ** 2])
    gains = power / power.sum(axis=0)  # the oracle ratio masks: their magnitudes are right, the phase is not

    def error_db(estimate):
        return 10 * np.log10(np.sum((estimate - tone) ** 2) / np.sum(tone**2))

    plain_tone, plain_noise = waveforms(mixture, spec, gains, CONFIG)
    phased_tone, phased_noise = waveforms(mixture, spec, gains, CONFIG, phased=(0,))
    np.testing.assert_allclose(plain_tone, istft(gains[0] * spec, CONFIG, length=mixture.shape[0]), atol=1e-6)
    np.testing.assert_allclose(phased_tone, consistent_estimate(gains[0], spec, CONFIG, mixture.shape[0]), atol=1e-6)
    for a, b in ((plain_tone, plain_noise), (phased_tone, phased_noise)):
        np.testing.assert_allclose(a + b, mixture, atol=1e-5)  # the other source takes the rest
    assert error_db(phased_tone) < error_db(plain_tone) - 0.5  # -12.8 against -11.9 dB


def test_the_unphased_sources_share_the_rest_by_their_masks():
    rng = np.random.default_rng(2)
    mixture = rng.normal(size=2000).astype(np.float32)
    spec = stft(mixture, CONFIG)
    gains = rng.dirichlet(np.ones(3), size=spec.shape).transpose(2, 0, 1)
    waves = waveforms(mixture, spec, gains, CONFIG, phased=(1,))
    rest = mixture - waves[1]
    shares = gains[[0, 2]] / gains[[0, 2]].sum(axis=0)
    np.testing.assert_allclose(waves[0], istft(shares[0] * stft(rest, CONFIG), CONFIG, length=2000), atol=1e-5)
    np.testing.assert_allclose(waves[0] + waves[1] + waves[2], mixture, atol=1e-5)
    # every source named: the last still takes the rest
    everything = waveforms(mixture, spec, gains[:2] / gains[:2].sum(axis=0), CONFIG, phased=(0, 1))
    np.testing.assert_allclose(everything[0] + everything[1], mixture, atol=1e-5)


@pytest.mark.parametrize("n_sources,phased", [(2, (1,)), (3, (0,)), (3, (1, 2)), (3, ())])
def test_streamed_synthesis_gives_the_offline_waveforms_from_blocks_of_any_size(n_sources, phased):
    rng = np.random.default_rng(n_sources + len(phased))
    n = 5000 - 37  # ends inside a hop
    mixture = rng.normal(size=n).astype(np.float32)
    spec = stft(mixture, CONFIG)
    gains = rng.dirichlet(np.ones(n_sources), size=spec.shape).transpose(2, 0, 1).astype(np.float32)
    want = np.stack(waveforms(mixture, spec, gains, CONFIG, phased))
    synthesis, parts, lo = StreamSynthesis(CONFIG, n_sources, phased), [], 0
    while lo < spec.shape[0]:  # blocks of 0-8 frames, each with the samples its frames have read
        hi = min(spec.shape[0], lo + int(rng.integers(0, 9)))
        parts.append(synthesis.add(gains[:, lo:hi], spec[lo:hi], min(n, (hi - 1) * CONFIG.hop_length + CONFIG.n_fft // 2)))
        lo = hi
    parts.append(synthesis.finish(n))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), want, atol=2e-6)
    held = sum(r[1].buffer.shape[0] for r in synthesis.retrievals[0].rounds) if phased else 0
    assert held <= PHASE_ITERATIONS * CONFIG.n_fft  # a frame of samples per round, not the stream


def test_hum_is_lines_and_other_noise_is_not():
    rng = np.random.default_rng(3)
    config = STFTConfig(512, 128)
    white = rng.normal(size=4 * RATE).astype(np.float32)
    assert line_sources({"noise": hum(4, 0), "hiss": mid_noise(rng, 4), "white": white}, config) == ["noise"]


def test_fit_separator_phases_a_hum_and_saves_the_choice(tmp_path):
    rng = np.random.default_rng(4)
    speech = low_tones(rng, 4)
    fast = dict(n_states=4, max_iter=5, n_models=1, state_components=2, line_n_fft=None)
    hummed = fit_separator({"speech": speech, "noise": hum(4, 0)}, RATE, **fast)
    assert hummed.options.inference.phase_sources == ["noise"]
    # the demo's hum stands out as lines at n_fft 1024 (share 0.60), not at 512 (0.42, its fan noise):
    # the test reads the finer STFT where there is one, and the finer separator, which resolves them, phases none
    demo_hum, coarse = demo_noise("hum", 4, 0, rate=RATE), {**fast, "n_fft": 512, "hop_length": 128}
    assert fit_separator({"speech": speech, "noise": demo_hum}, RATE, **coarse).options.inference.phase_sources == []
    pair = fit_separator({"speech": speech, "noise": demo_hum}, RATE, **{**coarse, "line_n_fft": 1024})
    assert pair.coarse.options.inference.phase_sources == ["noise"] and pair.fine.options.inference.phase_sources == []
    assert fit_separator({"speech": speech, "noise": mid_noise(rng, 4)}, RATE, **fast).options.inference.phase_sources == []
    off = fit_separator({"speech": speech, "noise": hum(4, 0)}, RATE, phase_sources=[], **fast)
    gaussian = {**fast, "emission": "complex_gaussian", "state_components": None}  # no dictionaries: no phase
    assert fit_separator({"speech": speech, "noise": hum(4, 0)}, RATE, **gaussian).options.inference.phase_sources == []
    with pytest.raises(ValueError, match="phase_sources names hum, not one of the sources"):
        fit_separator({"speech": speech, "noise": hum(4, 0)}, RATE, phase_sources="hum", **fast)

    mixture = low_tones(rng, 3) + hum(3, 1)
    want = hummed.separate(mixture)
    plain = off.separate(mixture)
    assert np.max(np.abs(want["noise"] - plain["noise"])) > 1e-3  # the noise's phase is its own
    np.testing.assert_allclose(want["speech"] + want["noise"], mixture, atol=1e-5)
    hummed.save(tmp_path / "sep")
    again = load(tmp_path / "sep")
    assert again.options.inference.phase_sources == ["noise"]
    np.testing.assert_allclose(again.separate(mixture)["noise"], want["noise"], atol=1e-5)
    # a format-13 folder (before phases of their own) reads with none
    meta_path = tmp_path / "sep" / "separator.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 13
    del meta["options"]["inference"]["phase_sources"], meta["options"]["inference"]["match_level"]
    meta_path.write_text(json.dumps(meta))
    old = off.with_level_matching(False).separate(mixture)  # and at the level as trained (format 15 on)
    np.testing.assert_allclose(load(tmp_path / "sep").separate(mixture)["noise"], old["noise"], atol=1e-5)


def test_the_cli_keeps_the_mixtures_phase_when_told(tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    rng = np.random.default_rng(6)
    fast = dict(n_states=4, max_iter=5, n_models=1, state_components=2, line_n_fft=None)
    hummed = fit_separator({"speech": low_tones(rng, 4), "noise": hum(4, 0)}, RATE, **fast)
    folder = hummed.save(tmp_path / "model")
    mixture = low_tones(rng, 3) + hum(3, 1)
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    for args, expected in (([], hummed), (["--no-phase"], hummed.with_phase_sources([]))):
        out = tmp_path / f"out{'-'.join(args)}"
        result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        wave, _ = sf.read(out / "mix_noise.wav", dtype="float32")
        np.testing.assert_allclose(wave, expected.separate(mixture)["noise"], atol=1e-5)
    assert hummed.with_phase_sources([]).options.inference.phase_sources == []
