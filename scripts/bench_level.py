"""Separation of real recordings made louder or quieter than the training audio.

Each task (real talkers against the real benchmark's noises, ``fhmm_ppl.audio.real``) is separated
with its mixture scaled by each of ``--gains`` dB, by the default separator (every source's spectra
at the recording's level, ``inference.match_level``; ``separation.level``) and by the same trained
models with the spectra as trained. Prints the speech's SDR improvement per task and gain, the
level each recording read, and the mean per gain. A separator that follows the recording's level
scores the same at every gain; one at the training level loses as the gain moves away from 0 dB.

With ``--heads S ...`` it measures instead what a stream gets (``separation.streaming.fitted_on_head``):
the default separator fitted (level and refined noise) to each recording's first S seconds only,
beside the whole recording and the spectra as trained with no refinement (a stream not fitted),
at each of ``--gains`` (10 dB by default there).

    python scripts/bench_level.py [--talkers dev1_female4_src_1 ...] [--noises pink ...] [--snr 0]
    python scripts/bench_level.py --heads 0.5 1 2 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: The real recordings, from the project root (see their PROVENANCE.md).
REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")
TALKERS = ("dev1_female4_src_1", "dev1_male4_src_2", "arctic_aew")
NOISES = ("pink", "dishes", "hum", "babble", "brown_modulated", "bike")
GAINS_DB = (-20.0, -10.0, -6.0, -3.0, 0.0, 3.0, 6.0, 10.0, 20.0)
HEAD_GAINS_DB = (10.0,)


def speech_sdri(separator, task, gain_db: float) -> float:
    """The speech's SDR improvement of ``separator.separate`` on the task's first mixture scaled by ``gain_db``."""
    from fhmm_ppl.metrics import separation_report

    gain = np.float32(10 ** (gain_db / 20))
    mixture = task.mixtures[0]
    refs = np.stack([task.references[0][n] for n in separator.names])
    estimates = separator.separate(mixture * gain)
    return float(separation_report(refs, np.stack([estimates[n] / gain for n in separator.names]),
                                   mixture)["sdr_improvement"][0])


def heads(tasks, seconds: list, gains: list) -> None:
    """The default separator fitted to each mixture's first ``seconds``, per gain: a table of means."""
    from fhmm_ppl.separation import fit_separator

    labels = [f"first {s:g} s" for s in seconds] + ["whole recording", "as trained, not refined"]
    rows = []
    for task in tasks:
        separator = fit_separator(task.train, task.sample_rate)
        for gain_db in gains:
            mixture = task.mixtures[0] * np.float32(10 ** (gain_db / 20))
            fitted = [separator.refine(mixture[: int(s * task.sample_rate)]) for s in seconds]
            fitted += [separator.refine(mixture), separator.with_level_matching(False).with_refinement(0)]
            rows.append([speech_sdri(f, task, gain_db) for f in fitted])
            print(f"{task.name:<44}{gain_db:+5.0f} dB" + "".join(f"{x:8.2f}" for x in rows[-1]), flush=True)
    print(f"\nMean speech SDR improvement (dB) over {len(tasks)} tasks at gains {gains} dB, the separator fitted to:")
    print("| " + " | ".join(labels) + " |\n|" + "---:|" * len(labels))
    print("| " + " | ".join(f"{x:.2f}" for x in np.mean(rows, axis=0)) + " |")


def main() -> None:
    from fhmm_ppl.audio.real import speech_noise_task
    from fhmm_ppl.separation import fit_separator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=REAL_AUDIO)
    parser.add_argument("--talkers", nargs="+", default=list(TALKERS))
    parser.add_argument("--noises", nargs="+", default=list(NOISES))
    parser.add_argument("--snr", type=float, default=0.0, help="speech-to-noise ratio of the mixtures, dB")
    parser.add_argument("--gains", type=float, nargs="+", help=f"recording gains, dB (default {GAINS_DB}; "
                        f"with --heads {HEAD_GAINS_DB})")
    parser.add_argument("--heads", type=float, nargs="+", help="seconds at each mixture's start to fit to instead")
    args = parser.parse_args()
    args.gains = args.gains or list(HEAD_GAINS_DB if args.heads else GAINS_DB)
    if args.heads:
        heads([speech_noise_task(args.folder, t, k, args.snr) for t in args.talkers for k in args.noises], args.heads,
              args.gains)
        return

    rows = {"at the recording's level (default)": [], "at the training level": []}
    print(f"{'task':<44}{'separator':<36}" + "".join(f"{g:>+8.0f}" for g in args.gains))
    for talker in args.talkers:
        for kind in args.noises:
            task = speech_noise_task(args.folder, talker, kind, args.snr)
            matched = fit_separator(task.train, task.sample_rate)
            levels = []
            for label, separator in zip(rows, (matched, matched.with_level_matching(False))):
                scores = []
                for gain_db in args.gains:
                    fitted = separator.refine(task.mixtures[0] * np.float32(10 ** (gain_db / 20)))
                    if fitted.recording_level is not None:
                        levels.append(fitted.recording_level)
                    scores.append(speech_sdri(fitted, task, gain_db))
                rows[label].append(scores)
                print(f"{task.name:<44}{label[:34]:<36}" + "".join(f"{s:8.2f}" for s in scores), flush=True)
            print(f"{'':<44}{'level read (dB)':<36}" + "".join(f"{v:8.1f}" for v in levels))
    print(f"\nMean speech SDR improvement (dB) over {len(rows[label])} tasks at {args.snr:g} dB SNR, per recording gain:")
    print("| separator | " + " | ".join(f"{g:+.0f} dB" for g in args.gains) + " |")
    print("|---|" + "---:|" * len(args.gains))
    for label, scores in rows.items():
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in np.mean(scores, axis=0)) + " |")


if __name__ == "__main__":
    main()
