"""Streaming separation: chunks of a mixture in, each source's final samples out, in constant memory.

Three parts, each testable alone:

- ``Framer``: an incremental centred STFT. It buffers samples and returns each frame as soon as
  every sample it covers has arrived, the frames ``audio.features.stft`` makes of the whole
  signal (zero centre padding at both ends; ``finish`` makes the last frames).
- a smoother (``SMOOTHERS``, chosen once from the separator's plan): ``ExactLag``, the exact
  posterior of frame ``t - L`` once frame ``t`` is in (``hmm.fixed_lag``; ``L`` frames = the lag),
  or ``MeanFieldLag``, structured mean field on a window of ``L + 1`` frames; the frames still
  inside the lag when the stream ends get the posterior given every frame.
- ``OverlapAdd``: the inverse STFT of ``audio.features.istft``, sample by sample as they become
  final (no later frame covers them), normalised by the same window sum of squares.

``stream`` wires them for a ``Separator``: per input chunk the new frames go through the
emission's log-likelihoods and the smoother in blocks of up to ``BLOCK`` frames (padded to a power of
two, so each kernel compiles at most five times), the frames leaving the lag get the separator's masks (averaged over its
model sets) and are overlap-added. Everything held is the lag's window, one frame of samples
and the current chunk: memory does not grow with the stream's length. With a lag covering the
whole stream the output is the offline ``Separator.separate``'s, except for the
``inference.phase_sources`` (a hum), whose estimates a stream leaves in the mixture's phase
(``separation.phase`` looks frames ahead).

Masks are per frame (a frame's mask reads only its posterior, its own mixture frame and the
causal running average of the noise's power, ``separation.averaging``, carried along), so every
built-in emission streams; an emission whose model frames depend on the whole recording says so
with ``frame_local = False`` and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import jax.numpy as jnp
import numpy as np
from scipy.signal import get_window

from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.hmm.fixed_lag import lag_advance, lag_flush, lag_state
from fhmm_ppl.runtime import numpy_blas_on_one_thread
from fhmm_ppl.separation.masks import Mixture
from fhmm_ppl.separation.posterior import Factored, Joint, scaled_log_lik

#: Frames per block through log-likelihoods, smoother and masks (one compilation per kernel).
BLOCK = 16
#: The lag (s) at which streaming stands in for whole-file separation of long recordings: on the
#: six demo tasks it scores within 0.01 dB SDRi of offline smoothing on every task
#: (``scripts/bench_streaming.py --lag-table``); a frame's posterior hardly depends on audio a
#: second away.
OFFLINE_LAG = 1.0
#: Recordings longer than this (s) are separated through the stream by ``fhmm-ppl separate``, so
#: that memory stays bounded whatever their length.
LONG_RECORDING = 300.0


def lag_frames(lag: float, sample_rate: int, hop_length: int) -> int:
    """The lag in frames, ``ceil(lag * sample_rate / hop_length)``; one-line error for a bad lag."""
    if isinstance(lag, bool) or not isinstance(lag, (int, float, np.integer, np.floating)):
        raise ValueError(f"lag must be a number of seconds >= 0, got {lag!r}")
    if not math.isfinite(lag) or lag < 0:
        raise ValueError(f"lag must be a finite number of seconds >= 0 (0: causal), got {lag}")
    return math.ceil(float(lag) * sample_rate / hop_length - 1e-9)


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


class ExactLag:
    """Exact fixed-lag smoothing (``hmm.fixed_lag``) for every model set of a separator.

    ``push(frames, n)`` takes a block of model frames ``(block_size(n), D)`` (the first ``n`` real) and
    returns, per model set, the posterior rows of the frames that left the lag; ``flush(n_left)``
    those of the last ``n_left`` frames, given every frame. Rows are tuples of arrays with one row
    per frame, here ``(joint (m, prod N),)``; ``posterior(rows, models)`` is what masks read.
    """

    def __init__(self, separator, n_lag: int) -> None:
        self.separator, self.lag = separator, n_lag
        self.windows = [lag_state(models.n_states, n_lag) for models in separator.sets]
        self.n_fed = 0

    def push(self, frames, n: int) -> list[tuple]:
        first = max(0, self.lag - self.n_fed)  # rows before it would be frames before frame 0
        valid = jnp.arange(frames.shape[0]) < n
        out = []
        for k, models in enumerate(self.separator.sets):
            log_lik = scaled_log_lik(models, self.separator.emission, frames, self.separator.options.evidence_scale)
            self.windows[k], rows = lag_advance(models.log_init, models.log_trans, self.windows[k], log_lik, valid)
            out.append((np.asarray(rows)[first:n],))
        self.n_fed += n
        return out

    def flush(self, n_left: int) -> list[tuple]:
        return [(np.asarray(lag_flush(models.log_trans, window))[-n_left:],)
                for models, window in zip(self.separator.sets, self.windows)]

    @staticmethod
    def posterior(rows: tuple, models):
        return Joint(jnp.asarray(_padded(rows[0])), models.n_states)


class MeanFieldLag:
    """Structured mean field on a window of ``W = L + 1`` frames, for emissions that have it.

    When the window is full, mean field (``emission.mean_field_marginals``) runs on it with each
    chain entering at its marginal of the frame before the window, pushed through its transitions,
    and the window's first frame leaves with its marginals. The frames left at the end get one run
    on what remains; a lag covering the stream is offline mean field. Rows: K arrays ``(m, N_k)``.
    """

    def __init__(self, separator, n_lag: int) -> None:
        self.separator, self.size = separator, n_lag + 1
        self.window = None  # model frames (w < W, D) not yet out
        self.entering = [None for _ in separator.sets]  # per set: K marginals (N_k,) of the last frame out

    def push(self, frames, n: int) -> list[tuple]:
        frames = np.asarray(frames)[:n]
        self.window = frames if self.window is None else np.concatenate([self.window, frames])
        out = [[] for _ in self.separator.sets]
        while self.window.shape[0] >= self.size:
            for k, rows in enumerate(self._run(self.window[:self.size], self.size, 1)):
                out[k].append(rows)
            self.window = self.window[1:]
        return [_joined(parts, tuple(np.zeros((0, n), np.float32) for n in models.n_states))
                for parts, models in zip(out, self.separator.sets)]

    def flush(self, n_left: int) -> list[tuple]:
        window = np.pad(self.window, ((0, self.size - n_left), (0, 0)), mode="edge")
        return self._run(window, n_left, n_left)

    def _run(self, window: np.ndarray, length: int, n_out: int) -> list[tuple]:
        """Mean field on ``window (W, D)`` (frames from ``length`` on are padding); the first ``n_out``
        frames' marginals per set, and each set's entering marginals moved to the last of them."""
        emission, scale = self.separator.emission, self.separator.options.evidence_scale
        out = []
        for k, models in enumerate(self.separator.sets):
            log_init = models.log_init if self.entering[k] is None else tuple(
                jnp.log(q @ jnp.exp(lt)) for q, lt in zip(self.entering[k], models.log_trans))
            marginals = emission.mean_field_marginals(log_init, models.log_trans, models.params, jnp.asarray(window),
                                                      scale, length)
            rows = tuple(np.asarray(m)[:n_out] for m in marginals)
            self.entering[k] = tuple(jnp.asarray(r[-1]) for r in rows)
            out.append(rows)
        return out

    @staticmethod
    def posterior(rows: tuple, models):
        return Factored(tuple(jnp.asarray(_padded(r)) for r in rows))


SMOOTHERS = {"exact": ExactLag, "mean_field": MeanFieldLag}


def stream(separator, chunks: Iterable, n_lag: int, method: str, convert) -> Iterator[dict[str, np.ndarray]]:
    """``Separator.stream``'s generator: ``{name: (m,)}`` per chunk of ``chunks``, then one with the rest.

    Args:
        separator: a ``Separator`` whose emission is frame-local.
        chunks: iterable of sample arrays; ``convert(chunk, number)`` checks each and makes it float32 ``(n,)``.
        n_lag: the smoother's lag in frames (``lag_frames``); method: ``"exact"`` or ``"mean_field"`` (``SMOOTHERS``).
    """
    config = separator.options.stft
    names = separator.names
    framer = Framer(config)
    synthesis = OverlapAdd(config, len(names))
    smoother = SMOOTHERS[method](separator, n_lag)
    average = separator.power_average()  # causal: carried from block to block
    pending = np.zeros((0, config.n_bins), np.complex64)  # frames fed to the smoother, not yet masked

    @numpy_blas_on_one_thread()
    def feed(spec: np.ndarray, flush: bool = False) -> np.ndarray:
        """Feed new frames ``(n, F)`` (with ``flush``, the stream's last); mask and overlap-add the
        frames whose posteriors are now known; return the samples now final ``(K, m)``."""
        nonlocal pending
        pending = np.concatenate([pending, spec])
        parts = [[] for _ in separator.sets]
        for lo in range(0, spec.shape[0], BLOCK):
            block = spec[lo:lo + BLOCK]
            frames = jnp.asarray(_padded(separator.emission.frames(block)))
            for k, rows in enumerate(smoother.push(frames, block.shape[0])):
                parts[k].append(rows)
        n_ready = sum(rows[0].shape[0] for rows in parts[0])
        n_left = pending.shape[0] - n_ready
        if flush and n_left:
            for k, rows in enumerate(smoother.flush(n_left)):
                parts[k].append(rows)
            n_ready += n_left
        posts = [_joined(p, ()) for p in parts]
        out = [np.zeros((len(names), 0), np.float32)]
        for lo in range(0, n_ready, BLOCK):
            block = pending[lo:min(lo + BLOCK, n_ready)]
            part = [smoother.posterior(tuple(r[lo:lo + BLOCK] for r in rows), models)
                    for rows, models in zip(posts, separator.sets)]
            out.append(synthesis.add(masks(separator, block, part, average) * block[None], framer.n_samples))
        pending = pending[n_ready:]
        return np.concatenate(out, axis=1)

    for number, chunk in enumerate(chunks):
        yield dict(zip(names, feed(framer.push(convert(chunk, number)))))
    tail = np.concatenate([feed(framer.finish(), flush=True), synthesis.finish(framer.n_samples)], axis=1)
    yield dict(zip(names, tail))


def masks(separator, spec: np.ndarray, posteriors: list, average) -> np.ndarray:
    """The separator's masks ``(K, n, F)`` of ``n <= BLOCK`` frames ``spec (n, F)`` from each model set's
    posterior over the frames padded to ``block_size(n)``, averaged over the sets, the stream's
    running power ``average`` (``separation.averaging``) moved on by these frames."""
    n = spec.shape[0]
    mixture = Mixture(jnp.asarray(_padded(separator.emission.frames(spec))),
                      jnp.asarray(_padded(np.abs(spec).astype(np.float32))) if separator.mask.magnitude else None)
    per_set = [separator.mask.make(post, models, mixture, separator.emission)
               for post, models in zip(posteriors, separator.sets)]
    return separator._finish(per_set, n, spec, average)


def _joined(parts: list[tuple], empty: tuple) -> tuple:
    """Row tuples stacked frame-wise (``empty`` when none has a row)."""
    parts = [rows for rows in parts if rows[0].shape[0]]
    return tuple(np.concatenate(column) for column in zip(*parts)) if parts else empty


def block_size(n: int) -> int:
    """The rows a block of ``1 <= n <= BLOCK`` frames is padded to: the next power of two. Small chunks
    (a few frames each, as live audio arrives) then cost what their frames cost, not a whole ``BLOCK``,
    for at most five compilations of each kernel (1, 2, 4, 8, 16 rows)."""
    return min(BLOCK, 1 << max(0, n - 1).bit_length())


def _padded(rows: np.ndarray) -> np.ndarray:
    """``rows (n, ...)``, ``1 <= n <= BLOCK``, with the last row repeated up to ``block_size(n)`` rows (real
    values: the padded rows' results are dropped, and must not be NaN where a kernel mixes frames)."""
    return np.pad(rows, [(0, block_size(rows.shape[0]) - rows.shape[0])] + [(0, 0)] * (rows.ndim - 1), mode="edge")
