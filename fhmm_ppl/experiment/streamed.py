"""Streaming under evaluation: each test mixture separated by ``Separator.stream`` at every lag of
``evaluation.stream_lags``, scored against offline separation.

Per lag the run gets the mean SDR improvement over sources and mixtures
(``stream.lag_<ms>ms.sdr_improvement``), the real-time factor (computing seconds per second of
audio, ``stream.lag_<ms>ms.rtf``) and the algorithmic latency (``stream.lag_<ms>ms.latency_ms``:
the lag rounded up to whole hops plus ``n_fft - hop`` samples, what the stream waits for before a
sample is final); the SDR improvement is also logged as one metric against the lag in
milliseconds (``stream.sdr_improvement``, step = lag), which MLflow draws as a curve, and as a plot.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fhmm_ppl.experiment.plots import sdri_against_lag
from fhmm_ppl.metrics import separation_report
from fhmm_ppl.separation.streaming import lag_frames


def latency_ms(lag: float, sample_rate: int, n_fft: int, hop: int) -> float:
    """What a stream at ``lag`` seconds waits for before a sample is final, in milliseconds."""
    return 1000.0 * (lag_frames(lag, sample_rate, hop) * hop + n_fft - hop) / sample_rate


def score_lags(separator, mixture: np.ndarray, references: np.ndarray, lags: list, chunk: int) -> dict:
    """``{lag: (mean SDRi over sources, computing seconds, latency ms)}`` of ``separator.stream`` on
    ``mixture`` in chunks of ``chunk`` samples; ``references (K, n)`` in ``separator.names`` order.
    The latency is the separator's own (its STFT: a mixture may get the finer one,
    ``separation.resolution``)."""
    features = separator.options.features
    chunks = [mixture[i:i + chunk] for i in range(0, mixture.shape[0], chunk)]
    out = {}
    for lag in lags:
        start = time.perf_counter()
        pieces = list(separator.stream(chunks, lag=lag))
        seconds = time.perf_counter() - start
        estimates = np.stack([np.concatenate([p[name] for p in pieces]) for name in separator.names])
        out[lag] = (float(separation_report(references, estimates, mixture)["sdr_improvement"].mean()), seconds,
                    latency_ms(lag, separator.sample_rate, features.n_fft, features.hop_length))
    return out


def metrics(per_mixture: list, durations: list) -> dict:
    """Flat MLflow metrics from ``score_lags``'s results per mixture and the mixtures' durations (s);
    the latency is the longest of the mixtures'."""
    flat = {}
    for lag in per_mixture[0]:
        flat[metric_name(lag, "sdr_improvement")] = float(np.mean([m[lag][0] for m in per_mixture]))
        flat[metric_name(lag, "rtf")] = float(sum(m[lag][1] for m in per_mixture) / sum(durations))
        flat[metric_name(lag, "latency_ms")] = max(m[lag][2] for m in per_mixture)
    return flat


def metric_name(lag: float, what: str) -> str:
    """``stream.lag_<ms>ms.<what>``: the name of a metric at ``lag`` seconds."""
    return f"stream.lag_{round(lag * 1000)}ms.{what}"


def plot(path: Path, lags: list, flat: dict, offline: float) -> Path:
    """SDR improvement against lag (``lags`` in seconds), with the offline figure as a line."""
    values = [flat[metric_name(lag, "sdr_improvement")] for lag in lags]
    return sdri_against_lag(path, [1000 * lag for lag in lags], values, offline)
