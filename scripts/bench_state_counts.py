"""How many states per source, given how much training audio: speech SDRi per (speech, noise) state count.

Trains the default separator at each state count on every task and separates with the speech HMMs
of one count and the noise HMMs of another (the sources' HMMs are trained independently, so a pair
of counts is a pair of trained models), beside the library's own choice (``model.n_states``
unset: ``separation.training.states_for``) and supervised KL-NMF. Two task sets:

* ``--sisec`` (default): the real-speech quick set (SiSEC female 1 and male 2, 6 s of training
  speech each, against the six noises of ``fhmm_ppl.audio.real`` at 0 dB, 10 s of training noise).
* ``--librispeech FOLDER``: talkers with more speech, each in ``FOLDER/<talker>/*.flac`` (LibriSpeech
  layout); the first ``--train`` seconds of a talker's utterances train, the next ``--test``
  seconds test, against the same noises. We used LibriSpeech test-other talkers 533, 1998, 1688 and
  2033 (CC BY 4.0; as shipped in the ``audio_data/librispeech_test-other`` folder of the
  resemble-ai/Resemblyzer repository), which this project does not ship.

    .venv/bin/python scripts/bench_state_counts.py --pairs 16,16 32,16 16,32 32,32
    .venv/bin/python scripts/bench_state_counts.py --librispeech DIR --talkers 533 1998 1688 2033
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.audio.real import RATE, real_tasks, task_noise
from fhmm_ppl.audio.tasks import SeparationTask, mix_at_snr
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator
from fhmm_ppl.separation.baselines import fit_supervised_nmf
from fhmm_ppl.separation.separator import Separator

REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")
LEVEL = 10 ** (-23 / 20)  # training speech RMS, as the real tasks set it


def librispeech_tasks(folder: str, talkers, noises, train_seconds: float, test_seconds: float, real: str):
    """Each talker's first ``train_seconds`` of utterances against each noise, tested on the next
    ``test_seconds``, at 0 dB."""
    for talker in talkers:
        utterances = [sf.read(path, dtype="float32")[0] for path in sorted(Path(folder, talker).glob("*.flac"))]
        speech = np.concatenate(utterances)
        n_train, n_test = int(train_seconds * RATE), int(test_seconds * RATE)
        if len(speech) < n_train + n_test:
            raise ValueError(f"{talker}: {len(speech) / RATE:.1f} s of speech, fewer than {train_seconds + test_seconds} s")
        bounds = np.cumsum([len(u) for u in utterances])
        start = int(bounds[np.searchsorted(bounds, n_train)])  # test from the next whole utterance
        train, test = speech[:n_train], speech[start:start + n_test]
        scale = LEVEL / np.sqrt(np.mean(train.astype(np.float64) ** 2))
        train, test = (train * scale).astype(np.float32), (test * scale).astype(np.float32)
        for kind in noises:
            noise = task_noise(real, kind, talker, 1, len(test) / RATE, 0)[: len(test)]
            target, interferer = mix_at_snr(test, noise, 0.0)
            task = SeparationTask(f"{talker}+{kind}", RATE, {"speech": train,
                                                             "noise": task_noise(real, kind, talker, 0, 10.0, 0)})
            task.mixtures.append((target + interferer).astype(np.float32))
            task.references.append({"speech": target, "noise": interferer})
            yield task


def scores(task, pairs) -> list[float]:
    """Speech SDRi of the library's choice, of each ``(speech states, noise states)`` pair, and of
    supervised KL-NMF (32 atoms per source at the default's STFT)."""
    mixture, reference = task.mixtures[0], task.references[0]
    references = np.stack([reference["speech"], reference["noise"]])
    floor = bss_eval(references, np.stack([mixture, mixture])).sdr[0]

    def sdri(separator) -> float:
        estimates = separator.separate(mixture)
        return float(bss_eval(references, np.stack([estimates["speech"], estimates["noise"]])).sdr[0] - floor)

    trained = {n: fit_separator(task.train, RATE, n_states=n) for n in sorted({n for pair in pairs for n in pair})}
    out = [sdri(fit_separator(task.train, RATE))]
    for speech_states, noise_states in pairs:
        members = [{"speech": s["speech"], "noise": n["noise"]}
                   for s, n in zip(trained[speech_states].members, trained[noise_states].members)]
        out.append(sdri(Separator(members, RATE, trained[speech_states].options, {})))
    return out + [sdri(fit_supervised_nmf(task.train, 32, STFTConfig(1024, 256), seed=0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech", metavar="FOLDER", help="talkers' FLAC folders (default: the SiSEC quick set)")
    parser.add_argument("--real", default=REAL_AUDIO, help=f"the real-audio folder, for noises (default {REAL_AUDIO})")
    parser.add_argument("--talkers", nargs="*", default=["533", "1998", "1688", "2033"])
    parser.add_argument("--noises", nargs="*", default=["pink", "brown_modulated", "hum", "dishes"])
    parser.add_argument("--train", type=float, default=13.0, help="seconds of training speech (LibriSpeech)")
    parser.add_argument("--test", type=float, default=10.0, help="seconds of test speech (LibriSpeech)")
    parser.add_argument("--pairs", nargs="*", default=["16,16", "32,16", "16,32", "32,32"],
                        help="speech,noise state counts")
    args = parser.parse_args()
    pairs = [tuple(int(n) for n in pair.split(",")) for pair in args.pairs]
    if args.librispeech:
        tasks = librispeech_tasks(args.librispeech, args.talkers, args.noises, args.train, args.test, args.real)
    else:
        tasks = real_tasks(args.real, talkers=("dev1_female4_src_1", "dev1_male4_src_2"), snrs=(0.0,), pairs=())
    columns = ["library's choice"] + [f"speech {s}, noise {n}" for s, n in pairs] + ["NMF 32/source"]
    rows = {}
    for task in tasks:
        rows[task.name] = scores(task, pairs)
        print(f"{task.name:40s}" + "".join(f"{v:8.2f}" for v in rows[task.name]), flush=True)
    print("\n| task | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    print("| mean | " + " | ".join(f"**{v:.2f}**" for v in np.mean(list(rows.values()), axis=0)) + " |")


if __name__ == "__main__":
    main()
