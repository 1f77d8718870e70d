"""The Massive Distributed Microphone Array dataset, read from a folder the user downloaded.

Corey, Skarha & Singer (2019), Illinois Data Bank IDB-6216881, CC BY 4.0:
363 WAV files at 48 kHz recorded in a large reverberant room with ten
loudspeakers playing VCTK speech. Layout::

    wearableXX/wearableXX_{chirpYY,speechYY,mix,noise}.wav   XX = 01-04, 16 channels
    tabletopXX/tabletopXX_{chirpYY,speechYY,mix,noise}.wav   XX = 01-12, 8 channels
    sources/chirp.wav, sources/speechYY.wav                  YY = 01-10 (dry signals)

Each array's solo recordings (``speechYY``) are the references for separating
that array's mixtures: either two solo recordings summed, or the real
ten-talker ``mix`` with all ten solo recordings as references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf

from fhmm_ppl.audio.io import read_audio

ARRAYS = {"wearable": (range(1, 5), 16), "tabletop": (range(1, 13), 8)}
N_TALKERS = 10
DOWNLOAD_HINT = (
    "download the Massive Distributed Microphone Array dataset from the Illinois Data Bank "
    "(https://doi.org/10.13012/B2IDB-6216881_V1, CC BY 4.0) and unpack it so that the folder holds "
    "wearable01/ ... tabletop12/ and sources/"
)
_ARRAY_FILE = re.compile(r"^(wearable|tabletop)(\d{2})_(chirp|speech)(\d{2})\.wav$|^(wearable|tabletop)(\d{2})_(mix|noise)\.wav$")
_SOURCE_FILE = re.compile(r"^(chirp|speech(\d{2}))\.wav$")


@dataclass(frozen=True)
class Recording:
    """One file of the dataset.

    Attributes:
        path: the WAV file.
        array: ``"wearable"``, ``"tabletop"`` or ``"sources"`` (dry signals).
        array_number: 1-12 (None for sources).
        kind: ``"speech"``, ``"chirp"``, ``"mix"`` or ``"noise"``.
        talker: loudspeaker / talker number 1-10 for speech and chirps (None otherwise).
        n_channels: channels in the file (read from its header).
    """

    path: Path
    array: str
    array_number: Optional[int]
    kind: str
    talker: Optional[int]
    n_channels: int

    @property
    def label(self) -> str:
        """The class label used by classification: the signal kind."""
        return self.kind


def parse_name(name: str) -> Optional[tuple[str, Optional[int], str, Optional[int]]]:
    """``(array, array_number, kind, talker)`` from a file name, or None if it is not a dataset file."""
    match = _ARRAY_FILE.match(name)
    if match:
        if match.group(1):
            return match.group(1), int(match.group(2)), match.group(3), int(match.group(4))
        return match.group(5), int(match.group(6)), match.group(7), None
    match = _SOURCE_FILE.match(name)
    if match:
        return ("sources", None, "chirp", None) if match.group(1) == "chirp" else ("sources", None, "speech", int(match.group(2)))
    return None


def list_recordings(root: Union[str, Path], require_complete: bool = False) -> list[Recording]:
    """Every dataset file under ``root``, sorted by path.

    Args:
        root: the downloaded folder.
        require_complete: also check that each array has its mix and noise and
            ten speech recordings, and that ``sources/`` is there.

    Raises:
        ValueError: the folder is missing, holds no dataset files, or (with
            ``require_complete``) lacks files, naming what is missing and how to get it.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder; {DOWNLOAD_HINT}")
    found = []
    for path in sorted(root.glob("*/*.wav")):
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        array, number, kind, talker = parsed
        expected_folder = "sources" if array == "sources" else f"{array}{number:02d}"
        if path.parent.name != expected_folder:
            continue
        found.append(Recording(path, array, number, kind, talker, sf.info(str(path)).channels))
    if not found:
        raise ValueError(f"{root}: holds no dataset files; {DOWNLOAD_HINT}")
    if require_complete:
        missing = _missing(root, found)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ValueError(f"{root}: incomplete, missing {shown}; {DOWNLOAD_HINT}")
    return found


def _missing(root: Path, found: list[Recording]) -> list[str]:
    have = {str(r.path.relative_to(root)) for r in found}
    wanted = ["sources/chirp.wav"] + [f"sources/speech{y:02d}.wav" for y in range(1, N_TALKERS + 1)]
    arrays_present = {(r.array, r.array_number) for r in found if r.array != "sources"}
    for array, number in sorted(arrays_present):
        prefix = f"{array}{number:02d}/{array}{number:02d}"
        wanted += [f"{prefix}_mix.wav", f"{prefix}_noise.wav"]
        wanted += [f"{prefix}_speech{y:02d}.wav" for y in range(1, N_TALKERS + 1)]
    return [w for w in wanted if w not in have]


def find(recordings: list[Recording], array: str, array_number: int, kind: str, talker: Optional[int] = None) -> Recording:
    """The one recording with these attributes (ValueError naming it if absent)."""
    for rec in recordings:
        if (rec.array, rec.array_number, rec.kind, rec.talker) == (array, array_number, kind, talker):
            return rec
    what = f"{array}{array_number:02d} {kind}" + (f"{talker:02d}" if talker else "")
    raise ValueError(f"the dataset folder has no recording for {what}")


def load_channel(recording: Recording, channel: int = 0, sample_rate: Optional[int] = 16000) -> np.ndarray:
    """One channel of a recording as float32, resampled (48 kHz -> ``sample_rate``)."""
    return read_audio(recording.path, sample_rate=sample_rate, channel=channel)[0]


@dataclass
class MMATask:
    """A separation task from the dataset: references per source and their mixture."""

    name: str
    sample_rate: int
    references: dict
    mixture: np.ndarray


def two_talker_task(recordings: list[Recording], array: str, array_number: int, talkers: tuple[int, int],
                    channel: int = 0, sample_rate: int = 16000) -> MMATask:
    """Two talkers' solo recordings at one array, summed: the solo recordings are the references."""
    refs = {f"talker{t:02d}": load_channel(find(recordings, array, array_number, "speech", t), channel, sample_rate)
            for t in talkers}
    n = min(len(r) for r in refs.values())
    refs = {k: v[:n] for k, v in refs.items()}
    return MMATask(f"{array}{array_number:02d}_talkers{talkers[0]:02d}+{talkers[1]:02d}", sample_rate, refs,
                   np.sum(list(refs.values()), axis=0).astype(np.float32))


def real_mix_task(recordings: list[Recording], array: str, array_number: int, channel: int = 0,
                  sample_rate: int = 16000) -> MMATask:
    """The recorded ten-talker ``mix`` with the ten solo recordings at the same array as references."""
    mixture = load_channel(find(recordings, array, array_number, "mix"), channel, sample_rate)
    refs = {f"talker{t:02d}": load_channel(find(recordings, array, array_number, "speech", t), channel, sample_rate)
            for t in range(1, N_TALKERS + 1)}
    n = min([len(mixture)] + [len(r) for r in refs.values()])
    return MMATask(f"{array}{array_number:02d}_mix", sample_rate, {k: v[:n] for k, v in refs.items()}, mixture[:n])
