"""The real-speech development benchmark's tasks (``fhmm_ppl.audio.real``).

The recordings are not shipped: tests that read them skip where ``../shared/data/real-audio`` is
missing (CI has it at the same relative path). The noise generators are tested without them.
"""

from pathlib import Path

import numpy as np
import pytest

from fhmm_ppl.audio.real import (
    NOISES,
    RATE,
    jittery_hum,
    modulated_brown,
    real_tasks,
    speech_noise_task,
    talker_pair_task,
    talker_speech,
)

FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio"
needs_recordings = pytest.mark.skipif(not FOLDER.is_dir(), reason=f"no real recordings at {FOLDER}")


def test_hum_is_harmonic_and_wanders():
    hum = jittery_hum(4.0, seed=3)
    spectrum = np.abs(np.fft.rfft(hum)) ** 2
    freqs = np.fft.rfftfreq(len(hum), 1 / RATE)
    base = 50.0 if spectrum[np.argmin(np.abs(freqs - 50))] > spectrum[np.argmin(np.abs(freqs - 60))] else 60.0
    near = lambda f: spectrum[(freqs > f - 2) & (freqs < f + 2)].sum()
    between = lambda f: spectrum[(freqs > f + 0.4 * base - 2) & (freqs < f + 0.4 * base + 2)].sum()
    for harmonic in (1, 2, 3):  # energy at the harmonics, far more than between them
        assert near(harmonic * base) > 20 * between(harmonic * base)
    assert not np.allclose(jittery_hum(1.0, seed=3), jittery_hum(1.0, seed=4))


def test_modulated_brown_swells_and_fades():
    noise = modulated_brown(6.0, seed=1)
    frames = noise[: len(noise) // 1600 * 1600].reshape(-1, 1600)  # 0.1 s frames
    level = 10 * np.log10(np.mean(frames**2, axis=1))
    assert level.max() - level.min() > 10  # the envelope is 20 dB deep


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no such folder of real recordings"):
        real_tasks(tmp_path / "nowhere")


@needs_recordings
def test_training_and_test_audio_never_share_a_sample():
    for talker in ("dev1_female4_src_1", "arctic_aew"):
        train, test = talker_speech(FOLDER, talker)
        assert len(train) > 4 * RATE and len(test) > 3 * RATE
        window = test[RATE: RATE + 2048]  # a stretch of test speech is nowhere in the training speech
        corr = np.correlate(train.astype(np.float64), window.astype(np.float64), mode="valid")
        assert np.max(np.abs(corr)) < 0.99 * np.sum(window.astype(np.float64) ** 2)
    for kind in NOISES:
        task = speech_noise_task(FOLDER, "dev1_male4_src_1", kind, snr_db=5.0)
        refs = task.references[0]
        np.testing.assert_allclose(task.mixtures[0], refs["speech"] + refs["noise"], atol=1e-6)
        snr = 10 * np.log10(np.mean(refs["speech"] ** 2) / np.mean(refs["noise"] ** 2))
        assert snr == pytest.approx(5.0, abs=0.01)
        assert not np.allclose(task.train["noise"][: len(refs["noise"])], refs["noise"])
    pair = talker_pair_task(FOLDER, "dev1_female4_src_2", "dev1_male4_src_2")
    assert list(pair.train) == ["dev1_female4_src_2", "dev1_male4_src_2"]


@needs_recordings
@pytest.mark.slow
def test_a_separator_beats_the_mixture_on_real_speech_in_recorded_noise():
    from fhmm_ppl.metrics import separation_report
    from fhmm_ppl.separation import fit_separator

    task = speech_noise_task(FOLDER, "dev1_female4_src_1", "dishes", snr_db=0.0)
    sep = fit_separator(task.train, task.sample_rate, emission="complex_gaussian", n_states=16, n_models=1,
                        max_iter=10)
    out = sep.separate(task.mixtures[0])
    refs = np.stack([task.references[0][n] for n in sep.names])
    report = separation_report(refs, np.stack([out[n] for n in sep.names]), task.mixtures[0])
    assert report["sdr_improvement"][0] > 3.0
