"""Figures logged with every run (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


def _figure(n_rows: int, height: float = 2.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(n_rows, 1, figsize=(9, height * n_rows), squeeze=False)


def _save(plt, fig, axes, path: Path, xlabel: str) -> Path:
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def spectrograms(path: Path, signals: Mapping[str, np.ndarray], sample_rate: int, n_fft: int = 512, hop: int = 128) -> Path:
    """Log-power spectrograms of several signals, one row each (mixture, references, estimates)."""
    from fhmm_ppl.audio.features import STFTConfig, stft

    plt, (fig, axes) = _figure(len(signals))
    for ax, (title, signal) in zip(axes[:, 0], signals.items()):
        power = np.abs(stft(signal, STFTConfig(n_fft, hop))) ** 2
        image = 10 * np.log10(power.T + 1e-10)
        ax.imshow(image, origin="lower", aspect="auto", vmin=image.max() - 80, vmax=image.max(), cmap="magma",
                  extent=(0, len(signal) / sample_rate, 0, sample_rate / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    return _save(plt, fig, axes, path, "time (s)")


def masks(path: Path, gains: np.ndarray, names: list[str], sample_rate: int, hop: int) -> Path:
    """The separation masks ``(K, T, F)``, one row per source."""
    plt, (fig, axes) = _figure(len(names))
    for ax, gain, name in zip(axes[:, 0], gains, names):
        ax.imshow(gain.T, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                  extent=(0, gain.shape[0] * hop / sample_rate, 0, sample_rate / 2000))
        ax.set_title(f"mask: {name}", fontsize=9)
        ax.set_ylabel("kHz")
    return _save(plt, fig, axes, path, "time (s)")


def training_curves(path: Path, history: Mapping[str, np.ndarray]) -> Path:
    """Training objective per iteration, one panel per source model (their scales differ)."""
    plt, (fig, axes) = _figure(len(history), height=2.0)
    for ax, (name, values) in zip(axes[:, 0], history.items()):
        ax.plot(np.arange(len(values)), values, marker=".")
        ax.set_title(f"{name}: training objective (log posterior)", fontsize=9)
    return _save(plt, fig, axes, path, "iteration")


def state_posteriors(path: Path, marginals: Mapping[str, np.ndarray], sample_rate: int, hop: int) -> Path:
    """Posterior state probabilities ``(T, N_k)`` of each source's chain, with the Viterbi-like argmax path."""
    plt, (fig, axes) = _figure(len(marginals))
    for ax, (name, probs) in zip(axes[:, 0], marginals.items()):
        seconds = probs.shape[0] * hop / sample_rate
        ax.imshow(probs.T, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="Greys",
                  extent=(0, seconds, -0.5, probs.shape[1] - 0.5), interpolation="nearest")
        ax.plot((np.arange(probs.shape[0]) + 0.5) * hop / sample_rate, probs.argmax(axis=1), ",", color="tab:red")
        ax.set_title(f"{name}: posterior over states (red: most probable state)", fontsize=9)
        ax.set_ylabel("state")
    return _save(plt, fig, axes, path, "time (s)")
