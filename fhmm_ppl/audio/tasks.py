"""Separation tasks: training audio per source and test mixtures with their references.

``demo_task`` builds them from the built-in demo data (``fhmm_ppl.audio.demo``), train and test
never sharing a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fhmm_ppl.audio.demo import RATE, TRAIN_SECONDS, chirps, demo_speech, noise

TASKS = ("speech_noise", "speech_chirp", "two_talkers")


def mix_at_snr(target: np.ndarray, interferer: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``interferer`` so that ``10 log10(P_target / P_interferer) = snr_db``; returns (target, scaled)."""
    gain = np.sqrt(np.mean(target**2) / np.mean(interferer**2) / 10 ** (snr_db / 10))
    return target, (interferer * gain).astype(np.float32)


@dataclass
class SeparationTask:
    """Training audio per source and test mixtures with references.

    Attributes:
        name: task name; sample_rate: Hz.
        train: ``{source: (n,)}`` solo training audio.
        mixtures: list of ``(n,)`` test mixtures.
        references: list of ``{source: (n,)}``, one per mixture, summing to it.
    """

    name: str
    sample_rate: int
    train: dict
    mixtures: list = field(default_factory=list)
    references: list = field(default_factory=list)


def demo_task(name: str = "speech_noise", noise_kind: str = "pink", snr_db: float = 0.0, seed: int = 0,
              test_seconds: float = 8.0) -> SeparationTask:
    """A separation task on the demo data.

    ``speech_noise``: talker1 against ``noise_kind``; ``speech_chirp``: talker1
    against sweeps; ``two_talkers``: talker1 against talker2. Speech trains on
    its first 16 s and is tested on the rest; generated interferers use
    different seeds for training and test.
    """
    if name not in TASKS:
        raise ValueError(f"unknown demo task {name!r}; choose one of {', '.join(TASKS)}")
    split = int(TRAIN_SECONDS * RATE)
    n_test = int(test_seconds * RATE)
    speech = demo_speech("talker1")
    train_speech, test_speech = speech[:split], speech[split : split + n_test]
    if name == "speech_noise":
        other = "noise"
        train_other = noise(noise_kind, TRAIN_SECONDS, seed, exclude_talker="talker1")
        test_other = noise(noise_kind, len(test_speech) / RATE, seed + 1000, exclude_talker="talker1")
    elif name == "speech_chirp":
        other = "chirp"
        train_other, test_other = chirps(TRAIN_SECONDS, seed), chirps(len(test_speech) / RATE, seed + 1000)
    else:
        other = "talker2"
        voice = demo_speech("talker2")
        train_other, test_other = voice[:split], voice[split : split + len(test_speech)]
    target, interferer = mix_at_snr(test_speech, test_other[: len(test_speech)], snr_db)
    task = SeparationTask(name, RATE, {"speech": train_speech, other: train_other})
    task.mixtures.append((target + interferer).astype(np.float32))
    task.references.append({"speech": target, other: interferer})
    return task
