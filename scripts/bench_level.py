"""Separation of real recordings made louder or quieter than the training audio.

Each task (real talkers against the real benchmark's noises, ``fhmm_ppl.audio.real``) is separated
with its mixture scaled by each of ``--gains`` dB, by the default separator (every source's spectra
at the recording's level, ``inference.match_level``; ``separation.level``) and by the same trained
models with the spectra as trained. Prints the speech's SDR improvement per task and gain, the
level each recording read, and the mean per gain. A separator that follows the recording's level
scores the same at every gain; one at the training level loses as the gain moves away from 0 dB.

    python scripts/bench_level.py [--talkers dev1_female4_src_1 ...] [--noises pink ...] [--snr 0]
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


def main() -> None:
    from fhmm_ppl.audio.real import speech_noise_task
    from fhmm_ppl.metrics import separation_report
    from fhmm_ppl.separation import fit_separator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=REAL_AUDIO)
    parser.add_argument("--talkers", nargs="+", default=list(TALKERS))
    parser.add_argument("--noises", nargs="+", default=list(NOISES))
    parser.add_argument("--snr", type=float, default=0.0, help="speech-to-noise ratio of the mixtures, dB")
    parser.add_argument("--gains", type=float, nargs="+", default=list(GAINS_DB), help="recording gains, dB")
    args = parser.parse_args()

    rows = {"at the recording's level (default)": [], "at the training level": []}
    print(f"{'task':<44}{'separator':<36}" + "".join(f"{g:>+8.0f}" for g in args.gains))
    for talker in args.talkers:
        for kind in args.noises:
            task = speech_noise_task(args.folder, talker, kind, args.snr)
            matched = fit_separator(task.train, task.sample_rate)
            mixture = task.mixtures[0]
            refs = np.stack([task.references[0][n] for n in matched.names])
            levels = []
            for label, separator in zip(rows, (matched, matched.with_level_matching(False))):
                scores = []
                for gain_db in args.gains:
                    gain = np.float32(10 ** (gain_db / 20))
                    fitted = separator.refine(mixture * gain)
                    if fitted.recording_level is not None:
                        levels.append(fitted.recording_level)
                    estimates = fitted.separate(mixture * gain)
                    report = separation_report(refs, np.stack([estimates[n] / gain for n in matched.names]), mixture)
                    scores.append(float(report["sdr_improvement"][0]))
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
