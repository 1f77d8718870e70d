"""Incremental STFT and inverse STFT for streams: ``Framer`` makes the frames ``audio.features.stft``
makes of everything pushed so far, ``OverlapAdd`` the samples of ``audio.features.istft`` as soon as
no later frame covers them (``separation.streaming``, ``separation.phase``)."""

from __future__ import annotations

import numpy as np
from scipy.signal import get_window

from fhmm_ppl.audio.features import STFTConfig


class Framer:
    """Incremental centred STFT: ``push(samples)`` returns the newly complete frames ``(n, F)``
    complex64, ``finish()`` the rest; together, the frames of ``stft`` of everything pushed."""

    def __init__(self, config: STFTConfig) -> None:
        self.n_fft, self.hop = config.n_fft, config.hop_length
        self.half = config.n_fft // 2
        self.window = get_window(config.window, config.n_fft, fftbins=True)
        self.buffer = np.zeros(self.half, np.float32)  # the centre padding before sample 0
        self.buffer_start = -self.half  # sample index of buffer[0]
        self.next_frame = 0
        self.n_samples = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, samples])
        self.n_samples += samples.shape[0]
        return self._frames(self.n_samples)

    def finish(self) -> np.ndarray:
        """The frames whose windows reach into the zero padding after the last sample."""
        if self.n_samples == 0:
            return np.zeros((0, self.n_fft // 2 + 1), np.complex64)
        self.buffer = np.concatenate([self.buffer, np.zeros(self.n_fft - self.half, np.float32)])
        return self._frames(self.n_samples + self.n_fft - self.half)

    def _frames(self, end: int) -> np.ndarray:
        """Frames ``next_frame ..`` whose windows end at or before sample ``end``; drops what no later frame reads."""
        first = self.next_frame
        stop = max(first, (end - self.n_fft + self.half) // self.hop + 1)
        offset = first * self.hop - self.half - self.buffer_start
        count = stop - first
        if count:
            view = np.lib.stride_tricks.sliding_window_view(self.buffer[offset:], self.n_fft)[::self.hop][:count]
            spec = np.fft.rfft(view * self.window, axis=1).astype(np.complex64)
        else:
            spec = np.zeros((0, self.n_fft // 2 + 1), np.complex64)
        self.next_frame = stop
        keep_from = stop * self.hop - self.half
        self.buffer = self.buffer[max(0, keep_from - self.buffer_start):]
        self.buffer_start = max(self.buffer_start, keep_from)
        return spec


class OverlapAdd:
    """Incremental ``istft`` of several signals at once: ``add(frames)`` with ``(K, n, F)`` spectra of
    the next ``n`` frames returns the ``(K, m)`` samples that no later frame can change; ``finish(n_samples)``
    the rest, up to the signal's length."""

    def __init__(self, config: STFTConfig, n_signals: int) -> None:
        self.n_fft, self.hop, self.half = config.n_fft, config.hop_length, config.n_fft // 2
        self.window = get_window(config.window, config.n_fft, fftbins=True)
        self.sums = np.zeros((n_signals, 0))  # overlap-added frames from padded position `start` on
        self.weights = np.zeros(0)  # the window's sum of squares over the same positions
        self.start = 0  # padded position (sample index + half) of sums[:, 0]
        self.n_frames = 0
        self.released = 0  # samples returned so far

    def add(self, spectra: np.ndarray, limit: int) -> np.ndarray:
        """Overlap-add the next frames; return the samples now final, none at or past sample ``limit``."""
        n = spectra.shape[1]
        end = (self.n_frames + n - 1) * self.hop + self.n_fft - self.start
        if n and end > self.weights.shape[0]:
            grow = end - self.weights.shape[0]
            self.sums = np.pad(self.sums, ((0, 0), (0, grow)))
            self.weights = np.pad(self.weights, (0, grow))
        frames = np.fft.irfft(spectra, n=self.n_fft, axis=2) * self.window  # (K, n, n_fft)
        square = self.window**2
        for i in range(n):
            at = (self.n_frames + i) * self.hop - self.start
            self.sums[:, at:at + self.n_fft] += frames[:, i]
            self.weights[at:at + self.n_fft] += square
        self.n_frames += n
        return self._release(min(self.n_frames * self.hop - self.half, limit))

    def finish(self, n_samples: int) -> np.ndarray:
        return self._release(n_samples, pad=True)

    def _release(self, stop: int, pad: bool = False) -> np.ndarray:
        """Samples ``released .. stop`` (divided by the window's sum of squares where it is not
        tiny), dropped from the buffers; ``pad``: zeros past what the frames cover, as ``istft``'s length."""
        stop = max(stop, self.released)
        lo, hi = self.released + self.half - self.start, stop + self.half - self.start
        if pad and hi > self.weights.shape[0]:
            self.sums = np.pad(self.sums, ((0, 0), (0, hi - self.weights.shape[0])))
            self.weights = np.pad(self.weights, (0, hi - self.weights.shape[0]))
        out, weight = self.sums[:, lo:hi], self.weights[lo:hi]
        nonzero = weight > np.finfo(np.float32).tiny
        out = np.where(nonzero, out / np.where(nonzero, weight, 1.0), out).astype(np.float32)
        drop = max(0, min(hi, self.n_frames * self.hop - self.start))  # the next frame starts there
        self.sums, self.weights = self.sums[:, drop:], self.weights[drop:]
        self.start += drop
        self.released = stop
        return out
