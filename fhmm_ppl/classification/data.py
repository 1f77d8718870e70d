"""Labelled recordings for classification: the demo set, the microphone-array dataset, the user's files.

Every recording carries a label (what to predict) and a group (what it shares
with other recordings: a room or array, a session). Grouped splits keep a
group wholly in training or wholly in test, so a model is never scored on a
room, or a stretch of a talker's speech, that it was trained on.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from scipy.signal import fftconvolve

from fhmm_ppl.audio import mma
from fhmm_ppl.audio.demo import RATE, TALKERS, chirps, demo_speech, noise
from fhmm_ppl.audio.io import read_audio

#: Demo sessions (the demo's stand-in for the dataset's arrays / rooms).
DEMO_SESSIONS = 4
DEMO_CLIP_SECONDS = 3.0


@dataclass
class LabelledRecordings:
    """Recordings with their labels and groups.

    Attributes:
        signals: R arrays ``(n_r,)`` float32.
        labels: R class labels; groups: R group names; names: R recording names.
        sample_rate: Hz.
    """

    sample_rate: int
    signals: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    names: list = field(default_factory=list)

    def add(self, signal: np.ndarray, label: str, group: str, name: str) -> None:
        self.signals.append(np.asarray(signal, np.float32))
        self.labels.append(label)
        self.groups.append(group)
        self.names.append(name)

    @property
    def classes(self) -> list[str]:
        """The labels present, sorted."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """Recordings per class (the class imbalance)."""
        return {c: self.labels.count(c) for c in self.classes}


def _room(rng: np.random.Generator, rate: int) -> np.ndarray:
    """A synthetic room impulse response ``(n,)``: direct path plus exponentially decaying noise."""
    rt60 = rng.uniform(0.2, 0.6)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    tail = rng.normal(size=n) * np.exp(-6.9 * t / rt60) * rng.uniform(0.1, 0.3)
    tail[0] = 1.0
    return tail / np.sqrt(np.sum(tail**2))


def demo_recordings(seed: int = 0, clip_seconds: float = DEMO_CLIP_SECONDS) -> LabelledRecordings:
    """The built-in classification set: speech, chirp, noise and mix clips in four rooms.

    Mirrors the dataset's categories and imbalance. In each session (group)
    ``s``: two clips of each of the four talkers from the ``s``-th quarter of
    their speech, three sweep trains, two noises (white / pink / brown / hum in
    turn) and two mixes of all four talkers from the same quarter. Each session
    has its own reverberant room and sensor-noise level. 60 recordings: speech
    32, chirp 12, noise 8, mix 8.
    """
    rng = np.random.default_rng(seed)
    n = int(clip_seconds * RATE)
    voices = {t: demo_speech(t) for t in TALKERS}
    quarter = min(len(v) for v in voices.values()) // DEMO_SESSIONS
    if 2 * n > quarter:
        raise ValueError(f"clip_seconds={clip_seconds} is too long for the demo: at most {quarter / RATE / 2:.1f} s")
    kinds = ("white", "pink", "brown", "hum")
    out = LabelledRecordings(RATE)
    for s in range(DEMO_SESSIONS):
        room, floor = _room(rng, RATE), 10 ** (rng.uniform(-60, -45) / 20)
        group = f"session{s + 1}"

        def record(signal: np.ndarray) -> np.ndarray:
            wet = fftconvolve(signal, room)[:n]
            return (wet + floor * rng.normal(size=n)).astype(np.float32)

        clips = {t: [voices[t][s * quarter + i * n: s * quarter + (i + 1) * n] for i in range(2)] for t in TALKERS}
        for t in TALKERS:
            for i, clip in enumerate(clips[t]):
                out.add(record(clip), "speech", group, f"{group}_{t}_clip{i + 1}")
        for i in range(3):
            out.add(record(chirps(clip_seconds, seed=1000 * (seed + 1) + 10 * s + i)), "chirp", group, f"{group}_chirp{i + 1}")
        for i in range(2):
            kind = kinds[(2 * s + i) % len(kinds)]
            out.add(record(noise(kind, clip_seconds, seed=2000 * (seed + 1) + 10 * s + i)), "noise", group, f"{group}_noise_{kind}")
        for i in range(2):
            mix = sum(clips[t][i] for t in TALKERS) / len(TALKERS)
            out.add(record(mix), "mix", group, f"{group}_mix{i + 1}")
    return out


def mma_recordings(root: str, channel: int = 0, sample_rate: int = 16000, max_seconds: Optional[float] = 10.0,
                   progress=None) -> LabelledRecordings:
    """Every recording of the microphone-array dataset, labelled by its signal kind from its file name.

    Labels are ``speech``, ``chirp``, ``noise`` and ``mix`` (the kinds of the
    file names, ``sources/`` included); groups are the arrays
    (``wearable01`` ... ``tabletop12``, ``sources``).

    Args:
        root: the downloaded folder; channel: channel to use (the dry
            sources have one, and always use it).
        sample_rate: resample to this rate; max_seconds: read at most this much of each file.
        progress: wraps an iterable with a progress display, as ``progress(items, description)``.
    """
    progress = progress or (lambda items, description: items)
    out = LabelledRecordings(sample_rate)
    for rec in progress(mma.list_recordings(root), "reading recordings"):
        group = "sources" if rec.array == "sources" else f"{rec.array}{rec.array_number:02d}"
        use = 0 if rec.n_channels == 1 else channel
        signal, _ = read_audio(rec.path, sample_rate, use, max_seconds=max_seconds)
        out.add(signal, rec.label, group, rec.path.stem)
    return out


def file_recordings(classes: Mapping[str, list[str]], sample_rate: int = 16000, channel="mean",
                    max_seconds: Optional[float] = None) -> LabelledRecordings:
    """The user's files: ``{label: [paths or globs]}``; each file is its own group."""
    out = LabelledRecordings(sample_rate)
    for label, patterns in classes.items():
        paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
        if not paths:
            raise ValueError(f"class {label!r}: no file matches {patterns}")
        for path in paths:
            out.add(read_audio(path, sample_rate, channel, max_seconds=max_seconds)[0], label, path, path)
    return out
