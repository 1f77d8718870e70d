"""Audio input/output errors, resampling, STFT/iSTFT and save/load round trips, features."""

import numpy as np
import pytest
import soundfile as sf

from fhmm_ppl.audio import Normalizer, STFTConfig, istft, log_mel, mfcc, read_audio, stft, write_audio


@pytest.fixture
def tone():
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_write_read_round_trip(tmp_path, tone):
    path = write_audio(tmp_path / "a.wav", tone, 16000)
    back, rate = read_audio(path)
    assert rate == 16000
    np.testing.assert_array_equal(back, tone)
    flac, _ = read_audio(write_audio(tmp_path / "a.flac", tone, 16000))
    np.testing.assert_allclose(flac, tone, atol=1e-6)


def test_channels_and_resampling(tmp_path, tone):
    stereo = np.stack([tone, -0.5 * tone], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(tmp_path / "s.wav", channel=1)[0], -0.5 * tone, atol=1e-7)
    np.testing.assert_allclose(read_audio(tmp_path / "s.wav")[0], 0.25 * tone, atol=1e-7)
    np.testing.assert_array_equal(read_audio(tmp_path / "s.wav", channel=None)[0], read_audio(tmp_path / "s.wav")[0])
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        read_audio(tmp_path / "s.wav", max_seconds=0)
    with pytest.raises(ValueError, match="has 2 channel\\(s\\); channel 5 does not exist"):
        read_audio(tmp_path / "s.wav", channel=5)
    down, rate = read_audio(tmp_path / "s.wav", sample_rate=8000, channel=0)
    assert rate == 8000 and down.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(down))
    assert np.argmax(spectrum) == 440  # 1 Hz bins at 8000 samples / 8 kHz: the tone survives


def test_every_bad_input_names_the_file_and_the_problem(tmp_path, tone):
    with pytest.raises(ValueError, match="missing.wav: no such file"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(ValueError, match="corrupt.wav: unreadable or corrupt audio"):
        read_audio(tmp_path / "corrupt.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="empty.wav: empty"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(1000, np.float32), 16000)
    with pytest.raises(ValueError, match="silent.wav: silent"):
        read_audio(tmp_path / "silent.wav")
    sf.write(tmp_path / "dc.wav", np.full(1000, 1e-4, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="dc.wav: silent \\(every sample has the same value"):
        read_audio(tmp_path / "dc.wav")
    sf.write(tmp_path / "nan.wav", np.where(np.arange(1000) == 3, np.nan, 0.1).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav: contains NaN"):
        read_audio(tmp_path / "nan.wav")
    sf.write(tmp_path / "short.wav", tone[:100], 16000)
    with pytest.raises(ValueError, match="short.wav: 100 samples is shorter than one analysis frame \\(512"):
        read_audio(tmp_path / "short.wav", min_samples=512)
    sf.write(tmp_path / "loud.wav", np.clip(tone * 10, -1, 1), 16000)
    with pytest.warns(UserWarning, match="loud.wav: .*clipped"):
        read_audio(tmp_path / "loud.wav")
    with pytest.raises(ValueError, match="refusing to write NaN"):
        write_audio(tmp_path / "x.wav", np.array([np.nan]), 16000)


def test_stft_istft_round_trip(tone):
    config = STFTConfig(n_fft=512, hop_length=128)
    noise = np.random.default_rng(0).normal(size=tone.shape).astype(np.float32) * 0.1
    spec = stft(tone + noise, config)
    assert spec.shape == (1 + len(tone) // 128, 257)
    np.testing.assert_allclose(istft(spec, config, length=len(tone)), tone + noise, atol=1e-5)


def test_features_and_normalisation_fitted_on_training_only(tone):
    feats = mfcc(tone, 16000)
    assert feats.shape[1] == 40 and np.all(np.isfinite(feats))
    assert log_mel(tone, 16000, n_mels=32).shape[1] == 32
    rng = np.random.default_rng(0)
    train, test = rng.normal(5, 2, (200, 3)), rng.normal(50, 2, (20, 3))
    scaled = Normalizer("standard").fit(train).transform(test)
    assert np.all(scaled > 10)  # test statistics did not leak into the scaler
    minmax = Normalizer("minmax").fit(train)
    assert minmax.transform(train).min() == pytest.approx(0) and minmax.transform(train).max() == pytest.approx(1)
    with pytest.raises(ValueError, match="normalisation must be"):
        Normalizer("zscore")
