"""Separation quality on the built-in demo data: FHMM variants against NMF, the mixture and oracle masks.

For each task (speech + noise at 0 dB for several noise kinds, speech + chirps,
two talkers) it trains every method on the same training audio, separates the
same test mixture on the same STFT, and prints BSS-Eval v3 SDR/SIR/SAR of the
speech estimate with the SDR improvement over the mixture. It ends with the
real-time factor of a whole FHMM separation (STFT -> inference -> masks ->
iSTFT, after compilation) for two 64-state sources at 16 kHz (hop 128 and 256),
two 32-state sources, and the log-mel separators.

Rows without "plain likelihood" scale the frames' log-likelihoods by
hop / n_fft when separating (the default, ``SeparatorOptions.likelihood_scale``);
"x3" rows are ensembles of three independently trained model sets
(``n_models=3``) whose masks are averaged.

Rows marked "states from clean sources" are a diagnostic oracle: the same
trained models and mask rule, with the posterior over joint states replaced by
the states each source model finds in its own clean source
(``Separator.state_oracle_gains``). The gap between such a row and the one
above it is what inference on the mixture loses; the gap to the IRM is what
the source models themselves cannot represent.

Run: ``python scripts/bench_quality.py [--quick | --rtf-only] [--write-docs]``; ``--write-docs``
puts the tables into docs/benchmarks.md (between the ``bench_quality`` markers) with the date,
commit and machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import benchdoc
import numpy as np

#: The real recordings, from the project root (see their PROVENANCE.md).
REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")


def score(references: np.ndarray, estimates: np.ndarray, mixture: np.ndarray) -> dict:
    from fhmm_ppl.metrics import separation_report

    report = separation_report(references, estimates, mixture)
    return {key: float(report[key][0]) for key in ("sdr", "sir", "sar", "sdr_improvement")}


def run_task(task, methods: dict, state_oracle: tuple = ()) -> list[tuple[str, dict]]:
    """Score every method on one task; methods named in ``state_oracle`` get a second row with the
    masks made from the states their models find in the clean sources."""
    from fhmm_ppl.audio import STFTConfig
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.separation import fit_separator
    from fhmm_ppl.separation.baselines import apply_masks, fit_supervised_nmf, oracle_masks

    names = list(task.train)
    mixture = task.mixtures[0]
    refs = np.stack([task.references[0][n] for n in names])
    config = STFTConfig(512, 128)
    rows = [("mixture", score(refs, np.stack([mixture] * len(names)), mixture))]
    for label, options in methods.items():
        sep = fit_separator(task.train, task.sample_rate, **options)
        out = sep.separate(mixture)
        rows.append((label, score(refs, np.stack([out[n] for n in names]), mixture)))
        if label in state_oracle:
            cfg = sep.options.stft
            masks = sep.state_oracle_gains(stft(mixture, cfg), [stft(r, cfg) for r in refs])
            rows.append((f"{ORACLE_PREFIX}{label}", score(refs, apply_masks(mixture, masks, cfg), mixture)))
    nmf = fit_supervised_nmf(task.train, n_components=32, config=config)
    out = nmf.separate(mixture)
    rows.append(("NMF 32/source (KL)", score(refs, np.stack([out[n] for n in names]), mixture)))
    for kind in ("irm", "ibm"):
        est = apply_masks(mixture, oracle_masks(refs, mixture, config, kind), config)
        rows.append((f"oracle {kind.upper()}", score(refs, est, mixture)))
    return rows


#: Prefix of the rows whose masks come from the states found in the clean sources.
ORACLE_PREFIX = "  states from clean sources: "


def real_time_factor(task, repeats: int = 20, seconds: float = 10.0, **options) -> tuple[float, float]:
    """Seconds of computation per second of audio for ``separate`` of the task's test mixture
    repeated cyclically to ``seconds`` (the real-time factor is quoted for 10 s mixtures), best and
    median of ``repeats`` (after compilation), for a separator of flat ``options`` trained in 10 EM
    iterations. The best is the machine's capability; on a shared VM the median also carries the
    neighbours' load."""
    from fhmm_ppl.separation import fit_separator

    sep = fit_separator(task.train, task.sample_rate, **({"max_iter": 10} | options))
    mixture = np.resize(task.mixtures[0], int(seconds * task.sample_rate))
    sep.separate(mixture)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sep.separate(mixture)
        times.append(time.perf_counter() - start)
    return min(times) / seconds, float(np.median(times)) / seconds


def matmul_throughput(size: int = 1024, repeats: int = 10) -> float:
    """Best float32 multiply-adds per second (in G) of a jitted ``size``-cubed matrix product: how
    fast this machine is at the moment, beside the real-time factors."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).random((size, size)), jnp.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return size**3 / best / 1e9


def _rtf_case(n_states: int, n_fft: int, hop: int, emission: str, n_models: int = 1, refine_iter: int = 0):
    label = (f"two {n_states}-state {emission} sources" + (f", {n_models} model sets" if n_models > 1 else "")
             + f", n_fft {n_fft}, hop {hop}" + (f", noise refined ({refine_iter})" if refine_iter else ""))
    return label, {"n_states": n_states, "n_fft": n_fft, "hop_length": hop, "emission": emission,
                   "n_models": n_models, "refine_iter": refine_iter}


#: The separators whose real-time factors are measured (the last is the default).
RTF_CASES = (_rtf_case(64, 512, 128, "complex_gaussian"), _rtf_case(64, 512, 256, "complex_gaussian"),
             _rtf_case(32, 512, 128, "complex_gaussian"), _rtf_case(32, 512, 128, "log_mel"),
             _rtf_case(64, 512, 128, "log_mel"), _rtf_case(64, 512, 128, "log_mel", 3),
             _rtf_case(16, 1024, 256, "log_mel", 3), ("the default", {}))


def print_real_time_factors(task) -> list[str]:
    """Print the real-time factors of ``RTF_CASES``; returns them as Markdown table rows."""
    print(f"\nreal-time factor of separate() (STFT -> inference -> masks -> iSTFT), 16 kHz, 10 s mixture, "
          f"best / median of 20 (float32 matrix products now: {matmul_throughput():.0f} GMAC/s on both cores):")
    rows = []
    for label, options in RTF_CASES:
        best, median = real_time_factor(task, **options)
        print(f"  {label}: {best:.4f} / {median:.4f}")
        rows.append(f"| {label} | {best:.4f} | {median:.4f} |")
    return rows


#: FHMM separators of the real-speech section (flat options over the library's defaults).
REAL_METHODS = {
    "the default: log-mel, states from training length, n_fft 1024, hop 256, x3, 8-spectrum dictionaries, two states each, spectra at the recording's level, noise refined on every second frame, noise power tracked by presence over 5 s where the noise repeats, else 0.5 s, each frame's pull capped by the noise's own rises, pitch warps where the noise is steady or there is none, hum's phase its own, reconstruction factors where the noise repeats": {
        "emission": "log_mel", "n_fft": 1024, "hop_length": 256},
    "the noise's level without ceilings (the default before)": {
        "emission": "log_mel", "n_fft": 1024, "hop_length": 256, "level_ceilings": False},
    "noise power frame by frame": {"emission": "log_mel", "n_fft": 1024, "hop_length": 256, "average_seconds": 0.0},
    "complex Gaussian 64, n_fft 512, hop 128": {"emission": "complex_gaussian", "n_states": 64, "n_models": 1,
                                                "n_fft": 512, "hop_length": 128},
    "complex Gaussian 64, n_fft 512, hop 128, noise power frame by frame": {
        "emission": "complex_gaussian", "n_states": 64, "n_models": 1, "n_fft": 512, "hop_length": 128,
        "average_seconds": 0.0},
}
#: Baselines of the real-speech section: supervised KL-NMF at two STFTs, the oracle ratio mask.
REAL_BASELINES = {"NMF 32/source": (512, 128), "NMF 32/source, n_fft 1024, hop 256": (1024, 256)}


def real_scores(task, methods: dict) -> dict:
    """SDR improvement per method on one real task: the speech estimate's against a noise, the mean of
    both talkers' for a talker pair; and the seconds each FHMM separation took (after training)."""
    from fhmm_ppl.audio import STFTConfig
    from fhmm_ppl.metrics import separation_report
    from fhmm_ppl.separation import fit_separator
    from fhmm_ppl.separation.baselines import apply_masks, fit_supervised_nmf, oracle_masks

    names = list(task.train)
    mixture = task.mixtures[0]
    refs = np.stack([task.references[0][n] for n in names])
    keep = slice(0, 1) if "speech" in names else slice(None)

    def improvement(estimates):
        return float(np.mean(separation_report(refs, estimates, mixture)["sdr_improvement"][keep]))

    out, seconds = {}, {}
    for label, options in methods.items():
        sep = fit_separator(task.train, task.sample_rate, **options)
        sep.separate(mixture)  # compile
        start = time.perf_counter()
        est = sep.separate(mixture)
        seconds[label] = time.perf_counter() - start
        out[label] = improvement(np.stack([est[n] for n in names]))
    for label, (n_fft, hop) in REAL_BASELINES.items():
        nmf = fit_supervised_nmf(task.train, n_components=32, config=STFTConfig(n_fft, hop))
        est = nmf.separate(mixture)
        out[label] = improvement(np.stack([est[n] for n in names]))
    config = STFTConfig(512, 128)
    out["oracle IRM"] = improvement(apply_masks(mixture, oracle_masks(refs, mixture, config, "irm"), config))
    return {"sdri": out, "seconds": seconds}


def run_real(folder: str, quick: bool, methods: dict = REAL_METHODS) -> list[str]:
    """The real-speech section: every method on the real tasks, printed per task and summarised per
    noise kind; returns the summary as Markdown lines."""
    from fhmm_ppl.audio.real import NOISES, TALKER_PAIRS, real_tasks

    talkers = (("dev1_female4_src_1", "dev1_male4_src_2") if quick
               else ("dev1_female4_src_1", "dev1_male4_src_2", "dev1_female4_src_3", "dev1_male4_src_4", "arctic_aew"))
    tasks = real_tasks(folder, talkers=talkers, snrs=(0.0,) if quick else (0.0, 5.0),
                       pairs=() if quick else TALKER_PAIRS)
    labels = list(methods) + list(REAL_BASELINES) + ["oracle IRM"]
    per_kind: dict = {}
    audio_seconds, compute = 0.0, {label: 0.0 for label in methods}
    print(f"\n# Real speech ({folder}): SDR improvement (dB), speech estimate (talker pairs: both talkers)")
    print(f"{'task':<48}" + "".join(f"{label[:22]:>24}" for label in labels))
    for task in tasks:
        result = real_scores(task, methods)
        kind = "talker pair" if "speech" not in task.train else task.name.split("+")[1].split("@")[0]
        per_kind.setdefault(kind, []).append(result["sdri"])
        audio_seconds += len(task.mixtures[0]) / task.sample_rate
        for label, value in result["seconds"].items():
            compute[label] += value
        print(f"{task.name:<48}" + "".join(f"{result['sdri'][label]:24.2f}" for label in labels), flush=True)
    kinds = [k for k in NOISES + ("talker pair",) if k in per_kind]
    table = [f"| method | {' | '.join(kinds)} | mean over noises | RTF |", "|---" * (len(kinds) + 3) + "|"]
    print(f"\n{'method':<40}" + "".join(f"{k[:14]:>16}" for k in kinds) + f"{'noise mean':>12}{'RTF':>8}")
    for label in labels:
        means = [float(np.mean([r[label] for r in per_kind[k]])) for k in kinds]
        noise_mean = float(np.mean([m for k, m in zip(kinds, means) if k != "talker pair"]))
        rtf = f"{compute[label] / audio_seconds:.3f}" if label in compute else ""
        print(f"{label:<40}" + "".join(f"{m:16.2f}" for m in means) + f"{noise_mean:12.2f}{rtf:>8}")
        table.append(f"| {label} | {' | '.join(f'{m:.2f}' for m in means)} | **{noise_mean:.2f}** | {rtf} |")
    return table


#: Methods that also get a row with the states read off the clean sources.
STATE_ORACLE = ("FHMM 32", "FHMM 32 log-mel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tasks only")
    parser.add_argument("--rtf-only", action="store_true", help="only the real-time factors (about 1 min)")
    parser.add_argument("--real", metavar="FOLDER", nargs="?", const=REAL_AUDIO,
                        help=f"only the real-speech section, on the recordings in FOLDER (default {REAL_AUDIO})")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args()
    from fhmm_ppl.audio.real import TALKER_PAIRS, real_tasks, talker_pair_task
    from fhmm_ppl.audio.tasks import demo_task
    from fhmm_ppl.runtime import enable_compilation_cache

    enable_compilation_cache()
    if args.rtf_only:
        print_real_time_factors(demo_task("speech_noise", "white"))
        return
    if args.real:
        table = run_real(args.real, args.quick)
        task = next(t for t in real_tasks(args.real, talkers=("dev1_female4_src_1",), snrs=(0.0,), pairs=())
                    if "hum" in t.name)
        from fhmm_ppl.separation.training import MAX_STATES, STATES_PER_SECOND

        best, median = real_time_factor(task)
        most, most_median = real_time_factor(task, n_states=MAX_STATES)
        table += ["", f"The default's real-time factor on a 10 s mixture ({task.name}'s repeated), after "
                      f"training: best {best:.4f}, median {median:.4f} of 20; with the most states it gives a "
                      f"source ({MAX_STATES} each, from {MAX_STATES / STATES_PER_SECOND:g} s of training audio): best {most:.4f}, "
                      f"median {most_median:.4f}."]
        pair = talker_pair_task(args.real, *TALKER_PAIRS[0])
        pair_best, pair_median = real_time_factor(pair)
        table[-1] += (f" On a talker pair ({pair.name}'s repeated), where each talker takes its own pitch warps: "
                      f"best {pair_best:.4f}, median {pair_median:.4f}.")
        print(table[-1])
        if args.write_docs:
            command = "python scripts/bench_quality.py --real --write-docs" + (" --quick" if args.quick else "")
            path = benchdoc.write("bench_real", "\n".join([
                benchdoc.stamp(command), "", "Mean SDR improvement (dB) per noise kind (speech estimate; talker "
                "pairs: both talkers), real-time factor of the separation after training:", "", *table]))
            print(f"wrote {path}")
        return
    tasks = [("speech+white", demo_task("speech_noise", "white")), ("speech+babble", demo_task("speech_noise", "babble"))]
    if not args.quick:
        tasks += [("speech+pink", demo_task("speech_noise", "pink")), ("speech+hum", demo_task("speech_noise", "hum")),
                  ("speech+chirps", demo_task("speech_chirp")), ("two talkers", demo_task("two_talkers"))]
    cg = {"emission": "complex_gaussian", "max_iter": 30, "n_models": 1, "n_fft": 512, "hop_length": 128}
    mel = {"emission": "log_mel", "max_iter": 30, "n_models": 1, "n_fft": 512, "hop_length": 128}
    methods = {
        "FHMM 32, plain likelihood": {**cg, "n_states": 32, "likelihood_scale": 1.0},
        "FHMM 32": {**cg, "n_states": 32},
        "FHMM 64": {**cg, "n_states": 64},
        "FHMM 64, hop 256": {**cg, "n_states": 64, "hop_length": 256},
        "FHMM 64, mean field": {**cg, "n_states": 64, "inference": "mean_field"},
        "FHMM 64 x3": {**cg, "n_states": 64, "n_models": 3},
        "FHMM 32 log-max": {**cg, "n_states": 32, "emission": "logmax"},
        "FHMM 32 log-mel, plain likelihood": {**mel, "n_states": 32, "likelihood_scale": 1.0},
        "FHMM 32 log-mel": {**mel, "n_states": 32},
        "FHMM 64 log-mel": {**mel, "n_states": 64},
        "FHMM 64 log-mel x3, dominance masks": {**mel, "n_states": 64, "n_models": 3, "soft_mask": "dominance",
                                                "state_components": 0},
        "FHMM 64 log-mel x3, blended masks": {**mel, "n_states": 64, "n_models": 3, "state_components": 0},
        "FHMM 64 log-mel x3": {**mel, "n_states": 64, "n_models": 3},
        "the default: log-mel, states from training length (32 here), n_fft 1024, hop 256, x3": {},
    }
    print("Speech estimate, BSS-Eval v3 (dB); SDRi = SDR improvement over the unprocessed mixture")
    summary = {}
    for label, task in tasks:
        print(f"\n## {label} (0 dB)")
        print(f"{'method':<50} {'SDR':>7} {'SIR':>7} {'SAR':>7} {'SDRi':>7}")
        for method, s in run_task(task, methods, state_oracle=STATE_ORACLE):
            print(f"{method:<50} {s['sdr']:7.2f} {s['sir']:7.2f} {s['sar']:7.2f} {s['sdr_improvement']:7.2f}")
            summary.setdefault(method, []).append(s["sdr_improvement"])
    print("\n## Mean SDRi over tasks")
    for method, values in summary.items():
        print(f"{method:<50} {np.mean(values):7.2f}")
    rtf_rows = print_real_time_factors(tasks[0][1])
    if args.write_docs:
        names = [name for name, _ in tasks]
        table = [f"| method | {' | '.join(names)} | mean |", "|---" * (len(names) + 2) + "|"]
        table += [f"| {method.strip()} | {' | '.join(f'{v:.2f}' for v in values)} | **{np.mean(values):.2f}** |"
                  for method, values in summary.items()]
        rtf = ["| separator | RTF best | RTF median |", "|---|---|---|", *rtf_rows]
        command = "python scripts/bench_quality.py --write-docs" + (" --quick" if args.quick else "")
        path = benchdoc.write("bench_quality", "\n".join([
            benchdoc.stamp(command), "", "Speech SDR improvement (dB) per task at 0 dB:", "", *table, "",
            "Real-time factor of a whole separation (the 8 s test mixture repeated to 10 s; best and median of 20):", "", *rtf]))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
