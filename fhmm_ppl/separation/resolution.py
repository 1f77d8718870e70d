"""A finer STFT for noise made of steady spectral lines (mains hum), used where a mixture shows them.

At ``features.n_fft`` 1024 (16 kHz) a Hann window's main lobe is 62 Hz wide, so the harmonics of a
50 or 60 Hz hum blur into each other and into the speech between them; at 2048 they are resolved.
On real talkers against steady hums whose test stretch matches the training one, separating at
``features.line_n_fft`` 2048 gained 0.5-1.5 dB, but it lost 0.5 dB over every other noise kind of
the real benchmark and 0.8 dB on a hum whose test fundamental differs from its training one
(docs/benchmarks.md, "Steady hum"). So the finer separator is trained only where a noise source's
(``inference.refine``, ``inference.average``) training audio is mostly lines (``line_share`` above
``LINE_SHARE``: hums 0.73-0.99; bike, dishes, babble and speech 0.12-0.37; pink and brown noise
under 0.02), and used only on mixtures whose long-term spectrum still peaks at those lines
(``lines_present`` above ``PRESENT_DB``: matched hums 2.0-5.2 dB; the benchmark's hum at another
fundamental -1.7 to -0.25; a 60 Hz hum against a 50 Hz one's lines 1.0).

``LineResolved`` is the pair: a separator at the options' STFT, one at the finer STFT, and the line
bins. Everything but the choice is the coarse separator's or the chosen one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
from scipy.ndimage import median_filter

from fhmm_ppl.audio.features import STFTConfig, stft
from fhmm_ppl.separation.streaming import fitted_stream

#: A bin is a line where the long-term power spectrum stands this many dB above its running median
#: over ``LINE_WINDOW`` bins (125 Hz at n_fft 2048, 16 kHz).
LINE_DB = 6.0
LINE_WINDOW = 17
#: A source is "lines" where more than this share of its power lies above the running median.
LINE_SHARE = 0.5
#: A mixture shows the lines where its long-term spectrum stands this many dB above its running
#: median, on average over the line bins.
PRESENT_DB = 1.5
#: The file in a saved separator's folder that holds the line bins; the finer separator is in ``FINE``.
LINES_FILE = "lines.npy"
FINE = "fine"


def long_term_power(audio: np.ndarray, config: STFTConfig) -> tuple[np.ndarray, np.ndarray]:
    """``audio (n_samples,)``'s mean power per bin ``(F,)`` (float64) and its running median across
    frequency over ``LINE_WINDOW`` bins ``(F,)``: the spectrum without its lines."""
    power = np.mean(np.abs(stft(np.asarray(audio, np.float32), config)) ** 2, axis=0).astype(np.float64) + 1e-20
    return power, median_filter(power, size=LINE_WINDOW, mode="nearest")


def line_profile(audio: np.ndarray, config: STFTConfig) -> np.ndarray:
    """``(F,)`` dB of ``audio``'s long-term power spectrum over its running median across frequency:
    steady lines stand out, broadband noise and moving harmonics do not."""
    power, floor = long_term_power(audio, config)
    return 10 * np.log10(power / floor)


def line_share(audio: np.ndarray, config: STFTConfig) -> float:
    """The share of ``audio``'s long-term power above its running median across frequency (0-1)."""
    power, floor = long_term_power(audio, config)
    return float(np.sum(np.maximum(power - floor, 0)) / np.sum(power))


def line_sources(sources: Mapping[str, np.ndarray], config: STFTConfig) -> list[str]:
    """The names in ``sources`` (``{name: training audio (n_samples,)}``) whose training audio is
    mostly steady lines at ``config`` (``line_share`` above ``LINE_SHARE``)."""
    return [name for name, audio in sources.items() if line_share(audio, config) > LINE_SHARE]


def tonal_lines(sources: Mapping[str, np.ndarray], config: STFTConfig) -> Optional[np.ndarray]:
    """The line bins ``(F,)`` (bool) of the ``line_sources``, or ``None`` where no source is lines."""
    lines = [line_profile(sources[name], config) > LINE_DB for name in line_sources(sources, config)]
    lines = [mask for mask in lines if mask.any()]
    return np.any(lines, axis=0) if lines else None


def lines_present(mixture: np.ndarray, lines: np.ndarray, config: STFTConfig) -> bool:
    """Whether ``mixture (n_samples,)``'s long-term spectrum peaks at the ``lines`` bins ``(F,)``."""
    return bool(np.mean(line_profile(mixture, config)[lines]) > PRESENT_DB)


class LineResolved:
    """A separator at the options' STFT (``coarse``) with one at a finer STFT (``fine``) for the
    mixtures that show the trained line bins ``lines (F_fine,)``: ``separate`` and ``refine`` choose
    per mixture (``choose``); ``stream`` and every other attribute are the coarse separator's."""

    def __init__(self, coarse, fine, lines: np.ndarray) -> None:
        self.coarse, self.fine, self.lines = coarse, fine, np.asarray(lines, bool)

    def __getattr__(self, name):  # names, options, sets, sample_rate, gains, ...
        if name.startswith("__") or name in ("coarse", "fine", "lines"):  # copies and pickles build before __init__
            raise AttributeError(name)
        return getattr(self.coarse, name)

    def choose(self, mixture: np.ndarray):
        """The fine separator where ``mixture (n_samples,)`` is long enough for its frames and shows
        the lines, else the coarse one."""
        config = self.fine.options.stft
        samples = np.asarray(mixture)
        if samples.ndim == 1 and samples.shape[0] >= config.n_fft and np.all(np.isfinite(samples)):
            if lines_present(samples.astype(np.float32), self.lines, config):
                return self.fine
        return self.coarse

    def separate(self, mixture: np.ndarray, *, return_gains: bool = False):
        """``Separator.separate`` by the chosen separator (masks on its STFT)."""
        return self.choose(mixture).separate(mixture, return_gains=return_gains)

    def refine(self, mixture: np.ndarray):
        """The chosen separator fitted to ``mixture`` (``Separator.refine``): a plain ``Separator``."""
        return self.choose(mixture).refine(mixture)

    def stream(self, chunks, lag: float = 0.1, fit_seconds: float = 0.0, live: bool = False):
        """``Separator.stream``: by the separator chosen and fitted on the first ``fit_seconds``
        (``streaming.fitted_stream``; ``live``: the coarse one until then), or the coarse one as it is
        where none are fitted to."""
        if fit_seconds:
            return fitted_stream(self, chunks, lag, fit_seconds, live)
        return self.coarse.stream(chunks, lag)

    def _both(self, method: str, *args, **kwargs) -> "LineResolved":
        return LineResolved(getattr(self.coarse, method)(*args, **kwargs), getattr(self.fine, method)(*args, **kwargs),
                            self.lines)

    def with_refinement(self, n_iter: int, sources=None) -> "LineResolved":
        return self._both("with_refinement", n_iter, sources)

    def with_average(self, seconds: float) -> "LineResolved":
        return self._both("with_average", seconds)

    def with_level_matching(self, on: bool) -> "LineResolved":
        return self._both("with_level_matching", on)

    def with_source_levels(self, on: bool) -> "LineResolved":
        return self._both("with_source_levels", on)

    def with_phase_sources(self, sources) -> "LineResolved":  # the fine separator resolves the lines: none
        return LineResolved(self.coarse.with_phase_sources(sources), self.fine, self.lines)

    def _with_options(self, **flat) -> "LineResolved":
        return self._both("_with_options", **flat)

    def save(self, folder: Union[str, Path]) -> Path:
        """The coarse separator in ``folder``, the fine one in ``folder/fine`` with the line bins."""
        path = self.coarse.save(folder)
        self.fine.save(Path(folder) / FINE)
        np.save(Path(folder) / FINE / LINES_FILE, self.lines)
        return path


def fine_options(options):
    """The options of the finer separator: ``features.line_n_fft``, the same overlap, no finer one again."""
    features = options.features
    n_fft = int(features.line_n_fft)
    return options.replace(n_fft=n_fft, hop_length=features.hop_length * n_fft // features.n_fft, line_n_fft=None)
