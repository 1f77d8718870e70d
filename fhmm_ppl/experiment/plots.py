"""Figures logged with every run (PNG).

Figures are ``matplotlib.figure.Figure`` objects saved directly, without pyplot: no global
backend is chosen and no figure is left open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from fhmm_ppl.audio.features import STFTConfig, stft


def _figure(n_rows: int, height: float = 2.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(9, height * n_rows))
    return fig, fig.subplots(n_rows, 1, squeeze=False)


def _save(fig: Figure, axes, path: Path, xlabel: str) -> Path:
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def spectrograms(path: Path, signals: Mapping[str, np.ndarray], sample_rate: int, n_fft: int = 512, hop: int = 128) -> Path:
    """Log-power spectrograms of several signals, one row each (mixture, references, estimates)."""
    fig, axes = _figure(len(signals))
    for ax, (title, signal) in zip(axes[:, 0], signals.items()):
        power = np.abs(stft(signal, STFTConfig(n_fft, hop))) ** 2
        image = 10 * np.log10(power.T + 1e-10)
        ax.imshow(image, origin="lower", aspect="auto", vmin=image.max() - 80, vmax=image.max(), cmap="magma",
                  extent=(0, len(signal) / sample_rate, 0, sample_rate / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    return _save(fig, axes, path, "time (s)")


def masks(path: Path, gains: np.ndarray, names: list[str], sample_rate: int, hop: int) -> Path:
    """The separation masks ``(K, T, F)``, one row per source."""
    fig, axes = _figure(len(names))
    for ax, gain, name in zip(axes[:, 0], gains, names):
        ax.imshow(gain.T, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                  extent=(0, gain.shape[0] * hop / sample_rate, 0, sample_rate / 2000))
        ax.set_title(f"mask: {name}", fontsize=9)
        ax.set_ylabel("kHz")
    return _save(fig, axes, path, "time (s)")


def training_curves(path: Path, history: Mapping[str, np.ndarray]) -> Path:
    """Training objective per iteration, one panel per source model (their scales differ)."""
    fig, axes = _figure(len(history), height=2.0)
    for ax, (name, values) in zip(axes[:, 0], history.items()):
        ax.plot(np.arange(len(values)), values, marker=".")
        ax.set_title(f"{name}: training objective (log posterior)", fontsize=9)
    return _save(fig, axes, path, "iteration")


def state_posteriors(path: Path, marginals: Mapping[str, np.ndarray], sample_rate: int, hop: int) -> Path:
    """Posterior state probabilities ``(T, N_k)`` of each source's chain, with the Viterbi-like argmax path."""
    fig, axes = _figure(len(marginals))
    for ax, (name, probs) in zip(axes[:, 0], marginals.items()):
        seconds = probs.shape[0] * hop / sample_rate
        ax.imshow(probs.T, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="Greys",
                  extent=(0, seconds, -0.5, probs.shape[1] - 0.5), interpolation="nearest")
        ax.plot((np.arange(probs.shape[0]) + 0.5) * hop / sample_rate, probs.argmax(axis=1), ",", color="tab:red")
        ax.set_title(f"{name}: posterior over states (red: most probable state)", fontsize=9)
        ax.set_ylabel("state")
    return _save(fig, axes, path, "time (s)")


def confusion_matrix(path: Path, confusion: np.ndarray, labels: list[str]) -> Path:
    """The confusion matrix ``(C, C)`` (rows true, columns predicted): counts, shaded by row share (recall)."""
    confusion = np.asarray(confusion)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(labels)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{confusion[i, j]}\n{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def feature_statistics(path: Path, raw: np.ndarray, scaled: np.ndarray, scaler: str) -> Path:
    """Per-dimension median and 5-95 % range of training frames ``(M, D)``, before and after scaling."""
    fig, axes = _figure(2, height=2.4)
    for ax, frames, title in zip(axes[:, 0], (raw, scaled), ("before scaling", f"after scaling ({scaler})")):
        dims = np.arange(frames.shape[1])
        low, mid, high = np.percentile(frames, [5, 50, 95], axis=0)
        ax.fill_between(dims, low, high, alpha=0.3, step="mid", label="5-95 %")
        ax.plot(dims, mid, drawstyle="steps-mid", label="median")
        ax.set_title(f"training features {title}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, axes, path, "feature dimension")


def log_likelihoods(path: Path, per_frame: np.ndarray, y_true: np.ndarray, labels: list[str]) -> Path:
    """Histograms of each class model's per-frame log-likelihood ``(M, C)`` over test recordings, by true class."""
    fig, axes = _figure(len(labels), height=1.8)
    finite = per_frame[np.isfinite(per_frame)]
    bins = np.linspace(np.percentile(finite, 1), np.percentile(finite, 100), 40) if finite.size else 10
    for ax, column, model in zip(axes[:, 0], per_frame.T, labels):
        for label in labels:
            values = column[np.asarray(y_true) == label]
            if values.size:
                ax.hist(values, bins=bins, alpha=0.5, label=f"true {label}")
        ax.set_title(f"log-likelihood per frame under the {model!r} model", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, axes, path, "log-likelihood per frame (nats)")


def sdri_against_lag(path: Path, lags_ms: list, sdri: list, offline: float) -> Path:
    """Streaming's mean SDR improvement against its lag (ms), beside whole-file separation's."""
    fig, axes = _figure(1, height=2.6)
    ax = axes[0, 0]
    ax.plot(lags_ms, sdri, marker="o", label="streamed")
    ax.axhline(offline, color="grey", linestyle="--", label="whole file")
    ax.set_ylabel("SDR improvement (dB)")
    ax.set_title("streaming: separation against look-ahead", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, axes, path, "lag (ms)")
