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
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.metrics import bss_eval
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
    return parser.parse_args(argv)


def timed_stream(separator, mixture: np.ndarray, chunk: int, lag: float):
    """Estimates ``{name: (n,)}`` of the stream, total seconds and the slowest chunk's seconds."""
    chunks = [mixture[i:i + chunk] for i in range(0, mixture.shape[0], chunk)]
    pieces, slowest = [], 0.0
    start = last = time.perf_counter()
    for piece in separator.stream(chunks, lag=lag):
        now = time.perf_counter()
        slowest, last = max(slowest, now - last), now
        pieces.append(piece)
    total = time.perf_counter() - start
    return {name: np.concatenate([p[name] for p in pieces]) for name in separator.names}, total, slowest


def main(argv=None) -> dict:
    args = parse(argv)
    task = demo_task("speech_noise", test_seconds=args.seconds)
    flat = {key: value for key, value in (("emission", args.emission), ("n_states", args.n_states),
                                          ("n_models", args.n_models), ("max_iter", args.max_iter)) if value is not None}
    separator = fit_separator(task.train, task.sample_rate, **flat)
    mixture = task.mixtures[0]
    references = np.stack([task.references[0][name] for name in separator.names])
    duration = mixture.shape[0] / task.sample_rate

    separator.separate(mixture)  # compile both paths
    timed_stream(separator, mixture, args.chunk, args.lag)
    offline_s, stream_s, slowest_s = np.inf, np.inf, np.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        offline = separator.separate(mixture)
        offline_s = min(offline_s, time.perf_counter() - start)
        online, seconds, slowest = timed_stream(separator, mixture, args.chunk, args.lag)
        if seconds < stream_s:
            stream_s, slowest_s = seconds, slowest

    sdr = {kind: float(bss_eval(references, np.stack([est[n] for n in separator.names])).sdr.mean())
           for kind, est in (("offline", offline), ("stream", online))}
    result = {"seconds": duration, "rtf_offline": offline_s / duration, "rtf_stream": stream_s / duration,
              "stream_over_offline": stream_s / offline_s, "slowest_chunk_over_its_duration":
              slowest_s / (args.chunk / task.sample_rate), "sdr_offline": sdr["offline"], "sdr_stream": sdr["stream"],
              "max_abs_difference": float(max(np.abs(online[n] - offline[n]).max() for n in separator.names))}
    print(f"{duration:.1f} s mixture at {task.sample_rate} Hz, {separator.options.model.emission}, lag {args.lag} s, "
          f"chunks of {args.chunk} samples")
    for key, value in result.items():
        print(f"  {key:32s} {value:.4g}")
    return result


if __name__ == "__main__":
    main()
