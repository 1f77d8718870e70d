"""Separation tasks from real recordings: the real-speech development benchmark.

The recordings live outside the package (``../shared/data/real-audio/`` from the project root;
see its ``PROVENANCE.md``): eight SiSEC 2011 talkers (10 s each), two CMU ARCTIC talkers (three
utterances each), and two recorded noises (dishes, an exercise bike). ``real_tasks(folder)`` pits
each talker against the recorded noises and against generated ones (pink, modulated brown,
jittery mains hum with harmonics, babble of the other real talkers) at 0 and 5 dB, and talkers
against each other. Training and test audio never share a sample: a talker trains on the start of
its recording (ARCTIC: on its first utterances) and is tested on the rest; a recorded noise trains
on its first half and is tested on a stretch of its second; generated noises use other seeds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fhmm_ppl.audio.demo import noise as demo_noise
from fhmm_ppl.audio.io import read_audio
from fhmm_ppl.audio.tasks import SeparationTask, mix_at_snr

RATE = 16000
#: SiSEC 2011 dev1 talkers (10 s each) and the ARCTIC talkers (three utterances each).
SISEC_TALKERS = tuple(f"dev1_{sex}4_src_{i}" for sex in ("female", "male") for i in range(1, 5))
ARCTIC_TALKERS = {"arctic_aew": ("cmu_arctic_us_aew_a0001", "cmu_arctic_us_aew_a0002", "cmu_arctic_us_aew_a0003"),
                  "arctic_axb": ("cmu_arctic_us_axb_a0004", "cmu_arctic_us_axb_a0005", "cmu_arctic_us_axb_a0006")}
RECORDED_NOISES = {"dishes": "doing_the_dishes", "bike": "exercise_bike"}
GENERATED_NOISES = ("pink", "brown_modulated", "hum", "babble")
NOISES = tuple(RECORDED_NOISES) + GENERATED_NOISES
#: Seconds of a SiSEC talker's recording it trains on (the rest is its test speech).
SPEECH_TRAIN_SECONDS = 6.0
#: Seconds of noise each task trains on.
NOISE_TRAIN_SECONDS = 10.0


@lru_cache(maxsize=32)
def _recording(path: Path) -> np.ndarray:
    """A recording at 16 kHz, read once per process (every task reads the same few files), read-only."""
    signal = read_audio(path, sample_rate=RATE)[0]
    signal.flags.writeable = False
    return signal


def talker_speech(folder: Union[str, Path], talker: str) -> tuple[np.ndarray, np.ndarray]:
    """A talker's ``(training, test)`` speech, float32 at 16 kHz, disjoint."""
    folder = Path(folder)
    if talker in ARCTIC_TALKERS:
        utterances = [_recording(folder / f"{name}.wav") for name in ARCTIC_TALKERS[talker]]
        return np.concatenate(utterances[:-1]), utterances[-1]
    if talker not in SISEC_TALKERS:
        raise ValueError(f"unknown talker {talker!r}; choose one of {', '.join(SISEC_TALKERS + tuple(ARCTIC_TALKERS))}")
    speech = _recording(folder / f"{talker}.wav")
    split = int(SPEECH_TRAIN_SECONDS * RATE)
    return speech[:split], speech[split:]


def jittery_hum(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Mains hum ``(n,)``: a 50 or 60 Hz fundamental whose frequency wanders by a few tenths of a hertz,
    ten harmonics of random strength that fade in and out, over low-passed broadband noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    base = rng.choice([50.0, 60.0])
    wander = np.cumsum(rng.normal(scale=0.002, size=n))
    wander = 0.3 * wander / max(np.abs(wander).max(), 1e-9)  # at most 0.3 Hz off
    phase = 2 * np.pi * np.cumsum(base + wander) / rate
    t = np.arange(n) / rate
    sig = np.zeros(n)
    for harmonic in range(1, 11):
        level = rng.uniform(0.2, 1.0) / harmonic ** rng.uniform(0.3, 1.0)
        swell = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 2 * np.pi))
        sig += level * swell * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    floor = demo_noise("brown", seconds, seed + 1, rate).astype(np.float64)
    return sig / np.std(sig) + 0.3 * floor / np.std(floor)


def modulated_brown(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Brown noise ``(n,)`` whose level swells and fades (0.3-1.5 Hz, 20 dB deep), like wind or traffic."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
    return demo_noise("brown", seconds, seed, rate).astype(np.float64) * envelope


def babble(folder: Union[str, Path], exclude: tuple[str, ...], part: int, seconds: float, seed: int) -> np.ndarray:
    """The SiSEC talkers other than ``exclude`` summed, each from a random start within its training
    (``part`` 0) or test (``part`` 1) stretch, looped to ``seconds``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    for talker in SISEC_TALKERS:
        if talker in exclude:
            continue
        voice = talker_speech(folder, talker)[part].astype(np.float64)
        voice = voice / np.sqrt(np.mean(voice**2))
        out += np.resize(np.roll(voice, -int(rng.integers(0, len(voice)))), n)
    return out


def task_noise(folder: Union[str, Path], kind: str, target: str, part: int, seconds: float, seed: int) -> np.ndarray:
    """Noise of ``kind`` for training (``part`` 0) or testing (``part`` 1), ``(n,)`` float32 at -23 dBFS RMS."""
    folder = Path(folder)
    if kind in RECORDED_NOISES:
        recording = _recording(folder / f"{RECORDED_NOISES[kind]}.wav")
        half = len(recording) // 2
        stretch = recording[:half] if part == 0 else recording[half:]
        n = int(seconds * RATE)
        if n > len(stretch):
            raise ValueError(f"{kind}: {len(stretch) / RATE:.1f} s per half, fewer than the {seconds} s asked for")
        start = int(np.random.default_rng(seed + part).integers(0, len(stretch) - n + 1))
        sig = stretch[start:start + n].astype(np.float64)
    elif kind == "pink":
        sig = demo_noise("pink", seconds, seed + 1000 * part)
    elif kind == "brown_modulated":
        sig = modulated_brown(seconds, seed + 1000 * part)
    elif kind == "hum":
        sig = jittery_hum(seconds, seed + 1000 * part)
    elif kind == "babble":
        sig = babble(folder, (target,), part, seconds, seed + 1000 * part)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISES)}")
    sig = np.asarray(sig, np.float64)
    return (sig * 10 ** (-23 / 20) / np.sqrt(np.mean(sig**2))).astype(np.float32)


def speech_noise_task(folder: Union[str, Path], talker: str, kind: str, snr_db: float = 0.0,
                      seed: int = 0) -> SeparationTask:
    """``talker`` against noise ``kind`` at ``snr_db``: sources ``speech`` and ``noise``."""
    train_speech, test_speech = talker_speech(folder, talker)
    scale = 10 ** (-23 / 20) / np.sqrt(np.mean(train_speech.astype(np.float64) ** 2))
    train_speech, test_speech = (train_speech * scale).astype(np.float32), (test_speech * scale).astype(np.float32)
    train_noise = task_noise(folder, kind, talker, 0, NOISE_TRAIN_SECONDS, seed)
    test_noise = task_noise(folder, kind, talker, 1, len(test_speech) / RATE, seed)[: len(test_speech)]
    target, interferer = mix_at_snr(test_speech, test_noise, snr_db)
    task = SeparationTask(f"{talker}+{kind}@{snr_db:g}dB", RATE, {"speech": train_speech, "noise": train_noise})
    task.mixtures.append((target + interferer).astype(np.float32))
    task.references.append({"speech": target, "noise": interferer})
    return task


def talker_pair_task(folder: Union[str, Path], first: str, second: str, snr_db: float = 0.0) -> SeparationTask:
    """Two talkers at ``snr_db`` (first over second): sources ``first`` and ``second``, by talker name."""
    (train_a, test_a), (train_b, test_b) = talker_speech(folder, first), talker_speech(folder, second)
    n = min(len(test_a), len(test_b))
    level = lambda x: 10 ** (-23 / 20) / np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))
    train = {first: (train_a * level(train_a)).astype(np.float32), second: (train_b * level(train_b)).astype(np.float32)}
    target, interferer = mix_at_snr((test_a[:n] * level(train_a)).astype(np.float32),
                                    (test_b[:n] * level(train_b)).astype(np.float32), snr_db)
    task = SeparationTask(f"{first}+{second}@{snr_db:g}dB", RATE, train)
    task.mixtures.append((target + interferer).astype(np.float32))
    task.references.append({first: target, second: interferer})
    return task


#: Talker pairs of the benchmark: a female and a male SiSEC talker twice, two female, and the ARCTIC pair.
TALKER_PAIRS = (("dev1_female4_src_1", "dev1_male4_src_1"), ("dev1_female4_src_2", "dev1_male4_src_2"),
                ("dev1_female4_src_3", "dev1_female4_src_4"), ("arctic_aew", "arctic_axb"))


def real_tasks(folder: Union[str, Path], talkers: Optional[tuple[str, ...]] = None,
               noises: tuple[str, ...] = NOISES, snrs: tuple[float, ...] = (0.0, 5.0),
               pairs: tuple[tuple[str, str], ...] = TALKER_PAIRS, seed: int = 0) -> list[SeparationTask]:
    """The benchmark's tasks: every talker against every noise at every SNR, then the talker pairs at 0 dB.

    Raises:
        ValueError: ``folder`` does not hold the recordings (one line naming what is missing).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder of real recordings (see ../shared/data/real-audio/PROVENANCE.md)")
    talkers = talkers if talkers is not None else SISEC_TALKERS + tuple(ARCTIC_TALKERS)
    tasks = [speech_noise_task(folder, talker, kind, snr, seed) for talker in talkers for kind in noises for snr in snrs]
    return tasks + [talker_pair_task(folder, a, b) for a, b in pairs]
