"""Streaming separation against offline separation on one demo mixture, in one process.

Trains a separator on the demo task ``speech_noise`` (not timed), compiles both paths once on
the mixture (not timed), then times ``Separator.separate`` on the whole mixture and
``Separator.stream`` on it in chunks of ``--chunk`` samples at ``--lag`` seconds, best of
``--repeats``. Prints each path's real-time factor (seconds of computing per second of audio),
their ratio, the slowest chunk's computing time against the chunk's own duration (what a live
input needs below one), the SDR of both against the references, and the largest difference from
the offline estimates.

Run: ``python scripts/bench_streaming.py`` (the default options, a 10 s mixture; a few minutes
on two cores, most of it training). ``--emission complex_gaussian --n-models 1`` is quicker.

``--fit-seconds S`` fits the stream to its first S seconds (``Separator.stream``'s ``fit_seconds``),
held back, or with ``--live`` separated as trained while they come in, the fitted separator taking
over after them; the slowest chunk is then the one that fits and catches up, and
``first_output_after_s`` says how much audio was read before the first samples came out.

``--lag-table`` instead scores the six demo tasks (the default separator) offline and streamed at
lags 0, 50, 100, 200 ms and 1 s: mean SDR improvement over sources per task and lag.
"""

from __future__ import annotations

import argparse
import time

import benchdoc
import numpy as np

from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.metrics import bss_eval, separation_report
from fhmm_ppl.separation import fit_separator


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="mixture length")
    parser.add_argument("--lag", type=float, default=0.1, help="streaming lag in seconds")
    parser.add_argument("--chunk", type=int, default=1024, help="samples per input chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the best is kept)")
    parser.add_argument("--emission", default=None, help="separator emission (default: the default)")
    parser.add_argument("--n-states", type=int, default=None)
    parser.add_argument("--n-models", type=int, default=None)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--fit-seconds", type=float, default=0.0, help="fit the stream to its first seconds")
    parser.add_argument("--live", action="store_true", help="with --fit-seconds: as trained until then, not held back")
    parser.add_argument("--lag-table", action="store_true", help="SDRi against lag on the six demo tasks")
    parser.add_argument("--write-docs", action="store_true", help="write the timing into docs/benchmarks.md")
    return parser.parse_args(argv)


#: The demo tasks of scripts/bench_quality.py's demo section, and the lags the table scores.
DEMO_TASKS = (("speech+white", ("speech_noise", "white")), ("speech+babble", ("speech_noise", "babble")),
              ("speech+pink", ("speech_noise", "pink")), ("speech+hum", ("speech_noise", "hum")),
              ("speech+chirps", ("speech_chirp",)), ("two talkers", ("two_talkers",)))
LAGS = (0.0, 0.05, 0.1, 0.2, 1.0)


def lag_table(chunk: int) -> str:
    """A Markdown table: per demo task, mean SDRi over sources offline and streamed at each of ``LAGS``."""
    rows = ["| task | " + " | ".join(f"lag {int(lag * 1000)} ms" for lag in LAGS) + " | offline |",
            "|---|" + "---|" * (len(LAGS) + 1)]
    totals = np.zeros(len(LAGS) + 1)
    for label, args in DEMO_TASKS:
        task = demo_task(*args)
        separator = fit_separator(task.train, task.sample_rate)
        scores = np.zeros(len(LAGS) + 1)
        for mixture, refs in zip(task.mixtures, task.references):
            references = np.stack([refs[n] for n in separator.names])
            estimates = [timed_stream(separator, mixture, chunk, lag)[0] for lag in LAGS] + [separator.separate(mixture)]
            scores += [separation_report(references, np.stack([e[n] for n in separator.names]), mixture)
                       ["sdr_improvement"].mean() for e in estimates]
        scores /= len(task.mixtures)
        totals += scores
        rows.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in scores) + " |")
        print(rows[-1], flush=True)
    rows.append("| **mean** | " + " | ".join(f"**{v:.2f}**" for v in totals / len(DEMO_TASKS)) + " |")
    return "\n".join(rows)


def timed_stream(separator, mixture: np.ndarray, chunk: int, lag: float, fit_seconds: float = 0.0, live: bool = False):
    """Estimates ``{name: (n,)}`` of the stream, total seconds, the slowest chunk's seconds and the
    samples read before the first samples came out."""
    chunks = [mixture[i:i + chunk] for i in range(0, mixture.shape[0], chunk)]
    read = [0]

    def reading():
        for piece in chunks:
            read[0] += piece.shape[0]
            yield piece

    pieces, slowest, first = [], 0.0, None
    start = last = time.perf_counter()
    for piece in separator.stream(reading(), lag=lag, fit_seconds=fit_seconds, live=live):
        now = time.perf_counter()
        slowest, last = max(slowest, now - last), now
        pieces.append(piece)
        if first is None and len(piece[separator.names[0]]):
            first = read[0]
    total = time.perf_counter() - start
    return {name: np.concatenate([p[name] for p in pieces]) for name in separator.names}, total, slowest, first


def main(argv=None) -> dict:
    args = parse(argv)
    if args.lag_table:
        table = lag_table(args.chunk)
        print("\nSDR improvement (dB, mean over sources), default separator, chunks of "
              f"{args.chunk} samples\n\n{table}")
        return {"table": table}
    task = demo_task("speech_noise", test_seconds=args.seconds)
    flat = {key: value for key, value in (("emission", args.emission), ("n_states", args.n_states),
                                          ("n_models", args.n_models), ("max_iter", args.max_iter)) if value is not None}
    separator = fit_separator(task.train, task.sample_rate, **flat)
    mixture = task.mixtures[0]
    references = np.stack([task.references[0][name] for name in separator.names])
    duration = mixture.shape[0] / task.sample_rate

    separator.separate(mixture)  # compile both paths
    fitting = dict(fit_seconds=args.fit_seconds, live=args.live)
    timed_stream(separator, mixture, args.chunk, args.lag, **fitting)
    offline_s, stream_s, slowest_s = np.inf, np.inf, np.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        offline = separator.separate(mixture)
        offline_s = min(offline_s, time.perf_counter() - start)
        online, seconds, slowest, first = timed_stream(separator, mixture, args.chunk, args.lag, **fitting)
        if seconds < stream_s:
            stream_s, slowest_s = seconds, slowest

    sdr = {kind: float(bss_eval(references, np.stack([est[n] for n in separator.names])).sdr.mean())
           for kind, est in (("offline", offline), ("stream", online))}
    result = {"seconds": duration, "rtf_offline": offline_s / duration, "rtf_stream": stream_s / duration,
              "stream_over_offline": stream_s / offline_s, "slowest_chunk_over_its_duration":
              slowest_s / (args.chunk / task.sample_rate), "first_output_after_s": first / task.sample_rate,
              "sdr_offline": sdr["offline"], "sdr_stream": sdr["stream"],
              "max_abs_difference": float(max(np.abs(online[n] - offline[n]).max() for n in separator.names))}
    fitted = f", fitted to its first {args.fit_seconds:g} s{' live' if args.live else ''}" if args.fit_seconds else ""
    print(f"{duration:.1f} s mixture at {task.sample_rate} Hz, {separator.options.model.emission}, lag {args.lag} s, "
          f"chunks of {args.chunk} samples{fitted}")
    for key, value in result.items():
        print(f"  {key:32s} {value:.4g}")
    if args.write_docs:
        rows = ["| path | real-time factor | SDR (dB) |", "|---|---|---|",
                f"| `separate` (whole mixture) | {result['rtf_offline']:.3f} | {result['sdr_offline']:.2f} |",
                f"| `stream`, lag {args.lag} s, chunks of {args.chunk} samples | {result['rtf_stream']:.3f} | "
                f"{result['sdr_stream']:.2f} |"]
        note = (f"{duration:.1f} s demo mixture, {separator.options.model.emission} (the default options), best of "
                f"{args.repeats}, after compilation; the slowest chunk took {result['slowest_chunk_over_its_duration']:.2f} "
                "of its own duration to compute.")
        benchdoc.write("bench_streaming", benchdoc.stamp("python scripts/bench_streaming.py --seconds "
                                                         f"{args.seconds:g} --write-docs") + "\n\n" + "\n".join(rows)
                       + "\n\n" + note)
    return result


if __name__ == "__main__":
    main()
