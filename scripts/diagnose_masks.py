"""Where the default's masks lose to the oracle ratio mask: the noise's power or the speech's?

The default's speech mask is ``e / (e + a)``: ``e = m^2 |y|^2`` the power its state-dictionary fit
gives the speech (``m`` the fit's speech share), ``a`` the noise's level tracked by presence
(``separation.averaging``). For each speech-against-noise task this trains the default separator,
refines it on the mixture as ``separate`` does, and scores the speech estimate (SDRi, dB) with one
of the two swapped for the truth:

* ``default``: ``e / (e + a)``, as ``separate`` makes it;
* ``frames``: ``e`` against the noise's power frame by frame (``a = 0`` averaging, the fit's shares);
* ``true noise``: ``e / (e + |n|^2)``, the true noise's power in each bin and frame;
* ``noise mean``: ``e`` against the true noise's mean power per bin over the mixture (a perfect
  stationary level);
* ``clean states``: the default's masks from the states each source model finds in its own clean
  source (``Separator.state_oracle_gains``) instead of those inferred on the mixture;
* ``true speech``: ``|s|^2 / (|s|^2 + a)``, the true speech's power against the tracked level;
* ``IRM``: ``|s|^2 / (|s|^2 + |n|^2)``, at the separator's STFT.

Two task sets: the real benchmark's talkers (``fhmm_ppl.audio.real``) and, with ``--librispeech
FOLDER``, talkers with 13 s of training speech (``bench_state_counts.librispeech_tasks``), each
against ``--noises`` at 0 dB.

    .venv/bin/python scripts/diagnose_masks.py
    .venv/bin/python scripts/diagnose_masks.py --librispeech DIR --talkers 533 1998 1688 2033
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_state_counts import REAL_AUDIO, librispeech_tasks

from fhmm_ppl.audio.features import istft, stft
from fhmm_ppl.audio.real import RATE, real_tasks
from fhmm_ppl.metrics import separation_report
from fhmm_ppl.separation import fit_separator
from fhmm_ppl.separation.baselines import oracle_masks

ROWS = ("default", "frames", "true noise", "noise mean", "clean states", "true speech", "IRM")
SISEC = ("dev1_female4_src_1", "dev1_female4_src_3", "dev1_male4_src_2", "dev1_male4_src_4", "arctic_aew")


def tracked_level(separator, raw: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """The noise's level ``a (T, F)`` that ``separator``'s presence rule tracks from the frame-by-frame
    masks ``raw (2, T, F)`` (speech, noise) on the mixture STFT ``spec (T, F)``: the averaged masks
    with the speech's share set to one are ``|y|^2 / (|y|^2 + a)`` and ``a / (|y|^2 + a)``."""
    probe = np.array(raw)
    probe[0] = 1.0
    averaged = separator.power_average()(probe, spec).astype(np.float64)
    return averaged[1] / np.maximum(averaged[0], 1e-12) * np.abs(spec).astype(np.float64) ** 2


def diagnose(task) -> dict:
    """SDRi (dB) of the speech estimate for each of ``ROWS`` on ``task``'s first mixture."""
    mixture = task.mixtures[0]
    references = np.stack([task.references[0]["speech"], task.references[0]["noise"]])
    separator = fit_separator(task.train, RATE).choose(mixture)
    config = separator.options.stft
    spec = stft(mixture, config)
    refined = separator.refine(mixture)
    frame_masks = refined.with_average(0).gains(spec)  # the masks before the noise's level is tracked
    default = refined.power_average()(frame_masks, spec)  # as ``refined.gains`` finishes them
    raw = frame_masks.astype(np.float64)
    level = tracked_level(refined, raw, spec) + 1e-20
    mixture_power = np.abs(spec).astype(np.float64) ** 2
    clean = [stft(r, config) for r in references]
    speech, noise = (np.abs(c).astype(np.float64) ** 2 for c in clean)
    fitted = raw[0] ** 2 * mixture_power
    masks = {"default": default[0], "frames": raw[0],
             "true noise": fitted / (fitted + noise + 1e-20),
             "noise mean": fitted / (fitted + noise.mean(axis=0) + 1e-20),
             "clean states": refined.state_oracle_gains(spec, clean)[0],
             "true speech": speech / (speech + level), "IRM": oracle_masks(references, mixture, config)[0]}

    def sdri(mask: np.ndarray) -> float:
        estimate = istft(mask * spec, config, length=len(mixture))
        report = separation_report(references, np.stack([estimate, mixture - estimate]), mixture)
        return float(report["sdr_improvement"][0])

    return {row: sdri(masks[row]) for row in ROWS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noises", nargs="+", default=["pink", "brown_modulated", "hum"])
    parser.add_argument("--librispeech", help="a folder of LibriSpeech talkers (FOLDER/<talker>/*.flac)")
    parser.add_argument("--talkers", nargs="+", help="talkers (default: five SiSEC/ARCTIC ones)")
    parser.add_argument("--real", default=REAL_AUDIO, help="the real recordings (default ../shared/data/real-audio)")
    args = parser.parse_args()
    if args.librispeech:
        tasks = list(librispeech_tasks(args.librispeech, args.talkers or ("533", "1998", "1688", "2033"),
                                       args.noises, 13.0, 10.0, args.real))
    else:
        tasks = real_tasks(args.real, talkers=tuple(args.talkers or SISEC), noises=tuple(args.noises), snrs=(0.0,),
                           pairs=())
    print(f"{'task':<44}" + "".join(f"{row:>13}" for row in ROWS))
    results = []
    for task in tasks:
        results.append(diagnose(task))
        print(f"{task.name:<44}" + "".join(f"{results[-1][row]:13.2f}" for row in ROWS), flush=True)
    for kind in args.noises:
        chosen = [r for t, r in zip(tasks, results) if f"+{kind}" in t.name]
        print(f"{'mean, ' + kind:<44}" + "".join(f"{np.mean([r[row] for r in chosen]):13.2f}" for row in ROWS))
    print(f"{'mean':<44}" + "".join(f"{np.mean([r[row] for r in results]):13.2f}" for row in ROWS))


if __name__ == "__main__":
    main()
