"""The microphone-array dataset loader on a generated tree with the real names and channel counts."""

import numpy as np
import pytest

from fhmm_ppl.audio import mma


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
