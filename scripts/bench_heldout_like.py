"""The held-out-like set: the nearest this project comes to the held-out real-speech test of issue 15.

Eight LibriSpeech test-other talkers (13 s of training speech, 10 s of test speech from their next
utterances, 0 dB) against pink noise, modulated brown noise (``fhmm_ppl.audio.real``'s, training
and test from other seeds) and the demo's steady hum (``audio.demo.noise("hum")``, seed 0 to
train, 1000 to test): 24 tasks, mean speech SDRi per noise kind (``mir_eval``'s
``bss_eval_sources``, as the held-out test scores).

Three steps, so that any commit's code can separate the same tasks::

    python scripts/bench_heldout_like.py --librispeech DIR --dump tasks.npz     # build the tasks once
    python scripts/bench_heldout_like.py --tasks tasks.npz [--set n_fft=1024 ...]  # fit_separator + separate
    python scripts/bench_heldout_like.py --tasks tasks.npz --baselines           # NMF and the oracle masks

The second step needs only ``fit_separator(sources, rate, **flat).separate(mixture)``, so it runs
on an old commit's package too (``git worktree add /tmp/old COMMIT`` and ``PYTHONPATH=/tmp/old``):
that is how docs/benchmarks.md ("The held-out-like set against the held-out test") reads the
held-out test's own rows on this set. ``DIR`` holds one folder of ``.flac`` utterances per talker
(the ``audio_data/librispeech_test-other`` folder of the resemble-ai/Resemblyzer repository, CC BY
4.0); the recordings of ``../shared/data/real-audio`` give the pink and modulated brown noise.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import mir_eval
import numpy as np
import yaml

RATE = 16000
TALKERS = ("533", "1998", "1688", "2033", "3331", "2414", "367", "3005")
KINDS = ("pink", "brown_modulated", "hum")


def dump(folder: str, path: str) -> None:
    """Build the 24 tasks with this checkout's code and save them to ``path`` (npz)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_state_counts import REAL_AUDIO, librispeech_tasks

    from fhmm_ppl.audio.demo import noise
    from fhmm_ppl.audio.tasks import mix_at_snr

    out = {}
    for i, task in enumerate(librispeech_tasks(folder, TALKERS, KINDS, 13.0, 10.0, REAL_AUDIO)):
        reference = task.references[0]
        mixture = task.mixtures[0]
        if task.name.endswith("+hum"):  # the demo's steady hum in place of the benchmark's jittery one
            speech = reference["speech"]
            test_hum = noise("hum", len(speech) / RATE + 0.1, 1000, RATE)[: len(speech)]
            target, interferer = mix_at_snr(speech, test_hum, 0.0)
            task.train["noise"] = noise("hum", 10.0, 0, RATE)
            mixture, reference = (target + interferer).astype(np.float32), {"speech": target, "noise": interferer}
        out.update({f"{i}_name": np.array(task.name), f"{i}_speech": task.train["speech"],
                    f"{i}_noise": task.train["noise"], f"{i}_mixture": mixture,
                    f"{i}_references": np.stack([reference["speech"], reference["noise"]])})
    np.savez(path, n=np.array(len(out) // 5), **out)
    print(f"{len(out) // 5} tasks written to {path}")


def sdr(references: np.ndarray, estimates: np.ndarray) -> float:
    """The speech's SDR (dB) of ``estimates (2, n)`` against ``references (2, n)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(mir_eval.separation.bss_eval_sources(references, estimates, compute_permutation=False)[0][0])


def run(path: str, flat: dict, baselines: bool, kinds=KINDS) -> None:
    """Separate the tasks of ``path`` against the noise ``kinds`` and print speech SDRi per task, per
    kind and over the kinds."""
    tasks = np.load(path)
    columns = ["NMF 32/source, n_fft 1024", "oracle IRM, n_fft 512", "oracle IRM, n_fft 1024"] if baselines \
        else [f"fit_separator({', '.join(f'{k}={v!r}' for k, v in flat.items())})"]
    scores = {}
    for i in range(int(tasks["n"])):
        name, mixture, references = str(tasks[f"{i}_name"]), tasks[f"{i}_mixture"], tasks[f"{i}_references"]
        if name.split("+")[1] not in kinds:
            continue
        sources = {"speech": tasks[f"{i}_speech"], "noise": tasks[f"{i}_noise"]}
        floor = sdr(references, np.stack([mixture, mixture]))
        started = time.perf_counter()
        row = [sdr(references, estimate[:, :references.shape[1]]) - floor
               for estimate in (baseline_estimates(sources, mixture, references) if baselines
                                else [separated(sources, mixture, flat)])]
        scores.setdefault(name.split("+")[1], []).append(row)
        print(f"{name:<24}", *(f"{x:7.2f}" for x in row), f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    means = {kind: np.mean(rows, axis=0) for kind, rows in scores.items()}
    for kind, mean in means.items():
        print(f"{kind:<24}", *(f"{x:7.2f}" for x in mean))
    print(f"{'mean over the kinds':<24}", *(f"{x:7.2f}" for x in np.mean(list(means.values()), axis=0)),
          "  " + " | ".join(columns))


def separated(sources: dict, mixture: np.ndarray, flat: dict) -> np.ndarray:
    """``fit_separator``'s estimates ``(2, n)``: the one call every commit of the package answers."""
    from fhmm_ppl.separation import fit_separator

    estimates = fit_separator(sources, RATE, **flat).separate(mixture)
    return np.stack([estimates["speech"], estimates["noise"]])


def baseline_estimates(sources: dict, mixture: np.ndarray, references: np.ndarray) -> list:
    """Supervised KL-NMF (32 atoms per source, n_fft 1024) and the oracle ratio mask at 512 and 1024."""
    from fhmm_ppl.audio.features import STFTConfig
    from fhmm_ppl.separation.baselines import apply_masks, fit_supervised_nmf, oracle_masks

    out = fit_supervised_nmf(sources, n_components=32, config=STFTConfig(1024, 256)).separate(mixture)
    estimates = [np.stack([out["speech"], out["noise"]])]
    for n_fft in (512, 1024):
        config = STFTConfig(n_fft, n_fft // 4)
        estimates.append(apply_masks(mixture, oracle_masks(references, mixture, config, "irm"), config))
    return estimates


def flat_option(text: str):
    """``key=value``, the value read as YAML (as ``fhmm-ppl run --set`` reads it): ``n_fft=1024``,
    ``reconstruction=false``."""
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech", help="with --dump: the folder of LibriSpeech test-other talkers")
    parser.add_argument("--dump", help="write the tasks to this npz file and stop")
    parser.add_argument("--tasks", help="the npz file --dump wrote")
    parser.add_argument("--set", action="append", default=[], type=flat_option, metavar="KEY=VALUE",
                        help="a flat fit_separator option (repeatable), e.g. n_fft=1024")
    parser.add_argument("--baselines", action="store_true", help="NMF and the oracle masks instead of fit_separator")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"noise kinds to separate (default {','.join(KINDS)})")
    args = parser.parse_args()
    if args.dump:
        if not args.librispeech:
            parser.error("--dump needs --librispeech DIR")
        dump(args.librispeech, args.dump)
    elif args.tasks:
        run(args.tasks, dict(args.set), args.baselines, tuple(args.kinds.split(",")))
    else:
        parser.error("give --dump FILE (with --librispeech DIR) or --tasks FILE")


if __name__ == "__main__":
    main()
