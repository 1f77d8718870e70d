"""The microphone-array dataset: its loader and its experiments, on generated trees with the real names and
channel counts."""

import numpy as np
import pytest
import soundfile as sf

from fhmm_ppl.audio import mma
from fhmm_ppl.experiment import ConfigError, load_config
from fhmm_ppl.experiment.data import load_task
from fhmm_ppl.experiment.prepare import prepare
from fhmm_ppl.separation import fit_separator


def test_lists_all_363_files_with_their_labels(mma_tree):
    recs = mma.list_recordings(mma_tree, require_complete=True)
    assert len(recs) == 363
    kinds = {k: sum(r.kind == k for r in recs) for k in ("speech", "chirp", "mix", "noise")}
    assert kinds == {"speech": 170, "chirp": 161, "mix": 16, "noise": 16}
    wearable = [r for r in recs if r.array == "wearable"]
    assert len(wearable) == 88 and {r.n_channels for r in wearable} == {16}
    assert {r.n_channels for r in recs if r.array == "tabletop"} == {8}
    rec = mma.find(recs, "tabletop", 7, "speech", 3)
    assert rec.path.name == "tabletop07_speech03.wav" and rec.talker == 3 and rec.array_number == 7


def test_names_are_parsed_strictly():
    assert mma.parse_name("wearable03_chirp10.wav") == ("wearable", 3, "chirp", 10)
    assert mma.parse_name("tabletop12_mix.wav") == ("tabletop", 12, "mix", None)
    assert mma.parse_name("speech07.wav") == ("sources", None, "speech", 7)
    assert mma.parse_name("tabletop12_roomnoise.wav") is None
    assert mma.parse_name("wearable03_speech1.wav") is None


def test_tasks_use_solo_recordings_as_references(mma_tree):
    recs = mma.list_recordings(mma_tree)
    task = mma.two_talker_task(recs, "wearable", 2, (1, 4), channel=5)
    assert list(task.references) == ["talker01", "talker04"]
    assert task.mixture.shape == (800,)  # 2400 samples at 48 kHz -> 16 kHz
    np.testing.assert_allclose(task.mixture, sum(task.references.values()), atol=1e-6)
    mix = mma.real_mix_task(recs, "tabletop", 1)
    assert len(mix.references) == 10 and mix.mixture.shape == (800,)


def test_missing_or_incomplete_folders_say_what_to_download(mma_tree, tmp_path):
    with pytest.raises(ValueError, match="no such folder; download the Massive Distributed Microphone Array"):
        mma.list_recordings(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no dataset files"):
        mma.list_recordings(tmp_path)
    partial = tmp_path / "partial"
    (partial / "wearable01").mkdir(parents=True)
    for name in ("wearable01_mix.wav", "wearable01_speech01.wav"):
        (partial / "wearable01" / name).write_bytes((mma_tree / "wearable01" / name).read_bytes())
    with pytest.raises(ValueError, match="incomplete, missing sources/chirp.wav"):
        mma.list_recordings(partial, require_complete=True)
    with pytest.raises(ValueError, match="no recording for wearable01 speech05"):
        mma.find(mma.list_recordings(partial), "wearable", 1, "speech", 5)


def test_mma_experiments_load_from_the_dataset_layout_or_say_what_to_download(tmp_path):
    with pytest.raises(ConfigError, match=r"data: root 'data/mma' is not a folder; download the Massive Distributed"):
        prepare(load_config("experiments/mma_two_talkers.yaml"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "mma" / "wearable01"
    folder.mkdir(parents=True)
    for talker in (1, 2):
        sf.write(folder / f"wearable01_speech{talker:02d}.wav", (0.1 * rng.normal(size=(96000, 16))).astype(np.float32), 48000)
    config = load_config("experiments/mma_two_talkers.yaml", [f"data.root={tmp_path / 'mma'}", "data.channel=3"])
    task = load_task(config)
    assert list(task.train) == ["talker01", "talker02"]
    assert len(task.train["talker01"]) == 22400 and task.mixtures[0].shape == (9600,)  # 70 / 30 of 2 s at 16 kHz
    np.testing.assert_allclose(task.mixtures[0], sum(task.references[0].values()), atol=1e-6)
    with pytest.raises(ValueError, match="no recording for wearable01 speech03"):
        load_task(load_config("experiments/mma_two_talkers.yaml", [f"data.root={tmp_path / 'mma'}", "data.talkers=[1, 3]"]))


def test_real_ten_talker_mix_from_the_dataset_layout_separates_by_mean_field(tmp_path):
    with pytest.raises(ConfigError, match=r"data: root 'data/mma' is not a folder; download"):
        prepare(load_config("experiments/mma_real_mix.yaml"))
    rng = np.random.default_rng(1)
    folder = tmp_path / "mma" / "tabletop01"
    folder.mkdir(parents=True)
    solos = []
    for talker in range(1, 11):  # each talker a different band of noise, 1 s at 48 kHz, 8 channels
        spec = np.fft.rfft(rng.normal(size=(48000, 8)), axis=0)
        spec[np.r_[: 300 + 600 * talker, 600 + 600 * talker: spec.shape[0]]] = 0
        solo = (np.fft.irfft(spec, 48000, axis=0) * 20).astype(np.float32)
        sf.write(folder / f"tabletop01_speech{talker:02d}.wav", solo, 48000)
        solos.append(solo)
    sf.write(folder / "tabletop01_mix.wav", np.sum(solos, axis=0)[:44000], 48000)  # the mix is a little shorter
    config = load_config("experiments/mma_real_mix.yaml", [f"data.root={tmp_path / 'mma'}"])
    task = load_task(config)
    assert list(task.train) == [f"talker{t:02d}" for t in range(1, 11)]
    n = -(-44000 // 3)  # 48 kHz -> 16 kHz
    assert len(task.train["talker01"]) == int(n * 0.7) and task.mixtures[0].shape == (n - int(n * 0.7),)
    assert len(task.references[0]) == 10
    sep = fit_separator(task.train, task.sample_rate, n_states=2, max_iter=3, inference="mean_field",
                        emission="complex_gaussian", n_models=1)
    est = sep.separate(task.mixtures[0])
    assert len(est) == 10 and all(np.all(np.isfinite(e)) for e in est.values())
    np.testing.assert_allclose(sum(est.values()), task.mixtures[0], atol=1e-4)

