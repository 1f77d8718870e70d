"""Turning the ``data`` section of an experiment into a separation task."""

from __future__ import annotations

import glob
import hashlib

import numpy as np

from fhmm_ppl.audio import mma
from fhmm_ppl.audio.io import read_audio
from fhmm_ppl.audio.tasks import SeparationTask, demo_task, mix_at_snr
from fhmm_ppl.experiment.config import ExperimentConfig


def _read_all(patterns: list[str], rate: int, channel, min_samples: int) -> np.ndarray:
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    return np.concatenate([read_audio(p, rate, channel, min_samples)[0] for p in paths])


def load_task(config: ExperimentConfig) -> SeparationTask:
    """The experiment's training audio per source and test mixtures with references."""
    data = config.data
    if data.source == "demo":
        return demo_task(data.task, data.noise, data.snr_db, config.seed, data.test_seconds)
    if data.source == "mma":
        return _mma_task(config)
    frame = config.features.n_fft
    train = {name: _read_all(patterns, data.sample_rate, data.channel, frame) for name, patterns in data.train.items()}
    task = SeparationTask("files", data.sample_rate, train)
    for item in data.test:
        refs = {name: read_audio(path, data.sample_rate, data.channel, frame)[0] for name, path in item.references.items()}
        if set(refs) != set(train):
            raise ValueError(f"test references {sorted(refs)} must name the training sources {sorted(train)}")
        mixture = read_audio(item.mixture, data.sample_rate, data.channel, frame)[0]
        n = min([len(mixture)] + [len(r) for r in refs.values()])
        task.mixtures.append(mixture[:n])
        task.references.append({name: refs[name][:n] for name in train})
    if data.test_clean:
        clean = {name: _read_all(patterns, data.sample_rate, data.channel, frame) for name, patterns in data.test_clean.items()}
        names = list(train)
        n = min(len(v) for v in clean.values())
        others = sum(clean[k][:n] for k in names[1:])
        target, scaled = mix_at_snr(clean[names[0]][:n], others, data.snr_db)
        gain = float(np.sqrt(np.mean(scaled**2) / np.mean(others**2)))  # the first source against all others
        refs = {names[0]: target, **{k: (clean[k][:n] * gain).astype(np.float32) for k in names[1:]}}
        task.mixtures.append(np.sum(list(refs.values()), axis=0).astype(np.float32))
        task.references.append(refs)
    return task


def _mma_task(config: ExperimentConfig) -> SeparationTask:
    """Talkers' solo recordings at one array: the first part of each trains its HMM, the rest is
    scored: summed (``two_talkers``), or the same stretch of the recorded ten-talker mix (``real_mix``)."""
    data = config.data
    recordings = mma.list_recordings(data.root)
    channel = data.channel if isinstance(data.channel, int) else 0
    talkers = range(1, mma.N_TALKERS + 1) if data.mma_task == "real_mix" else data.talkers
    solo = {f"talker{t:02d}": mma.load_channel(mma.find(recordings, data.array, data.array_number, "speech", t),
                                               channel, data.sample_rate) for t in talkers}
    mix = None
    if data.mma_task == "real_mix":
        mix = mma.load_channel(mma.find(recordings, data.array, data.array_number, "mix"), channel, data.sample_rate)
    n = min([len(v) for v in solo.values()] + ([len(mix)] if mix is not None else []))
    split = int(n * data.train_fraction)
    task = SeparationTask(f"mma_{data.array}{data.array_number:02d}_{data.mma_task}", data.sample_rate,
                          {name: v[:split] for name, v in solo.items()})
    refs = {name: v[split:n] for name, v in solo.items()}
    task.mixtures.append(mix[split:n] if mix is not None else np.sum(list(refs.values()), axis=0).astype(np.float32))
    task.references.append(refs)
    return task


def fingerprint_arrays(items) -> str:
    """A short hash of ``(name, array)`` pairs, in order (identifies the data a run saw)."""
    digest = hashlib.sha256()
    for name, array in items:
        digest.update(str(name).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def fingerprint(task: SeparationTask) -> str:
    """A short hash of every training and test array of a separation task."""
    return fingerprint_arrays([(name, task.train[name]) for name in sorted(task.train)]
                              + [("", mixture) for mixture in task.mixtures])
