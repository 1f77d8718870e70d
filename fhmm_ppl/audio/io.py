"""Reading and writing audio with clear, one-line errors for every bad input.

Reading goes through soundfile (WAV, FLAC, OGG, ...), resampling through
librosa (soxr, a maintained high-quality resampler). Every problem a user can
hit raises ``ValueError`` naming the file and the problem: missing, unreadable
or corrupt, empty, shorter than one analysis frame, all zeros (or constant), NaN or inf, a
channel that does not exist. Clipping is a warning, not an error. Streams: ``read_blocks``
(a file, or standard input with or without a header), ``AudioWriter`` (a file, block by block),
``PcmWriter`` (headerless PCM to standard output).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import librosa
import numpy as np
import soundfile as sf
import soxr

Channel = Union[None, int, str]

#: Fraction of samples at full scale above which a recording is reported as clipped.
CLIP_FRACTION = 1e-3


def _check_channel(channel: Channel, n_channels: int, path: Path) -> None:
    """One line unless ``channel`` is ``"mean"``/None or the index of one of ``n_channels`` channels."""
    if channel is None or channel == "mean":
        return
    if not isinstance(channel, int) or isinstance(channel, bool):
        raise ValueError(f"channel must be 'mean' or an int index, got {channel!r}")
    if not -n_channels <= channel < n_channels:
        raise ValueError(f"{path}: has {n_channels} channel(s); channel {channel} does not exist (0-based)")


def _mono(data: np.ndarray, channel: Channel) -> np.ndarray:
    """``data (n, channels)`` down-mixed (``"mean"``/None) or the one ``channel`` (checked before)."""
    return data.mean(axis=1) if channel is None or channel == "mean" else data[:, channel]


def _existing_file(path: Union[str, Path]) -> Path:
    """``path`` as a Path, or a one-line error: missing, or a folder."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not an audio file")
    return path


def read_audio(
    path: Union[str, Path],
    sample_rate: Optional[int] = None,
    channel: Channel = "mean",
    min_samples: int = 1,
    max_seconds: Optional[float] = None,
) -> tuple[np.ndarray, int]:
    """Read a recording as mono float32.

    Args:
        path: audio file.
        sample_rate: resample to this rate (Hz); None keeps the file's rate.
        channel: ``"mean"`` (or None) down-mixes all channels, an int picks one (0-based).
        min_samples: fewest samples acceptable after resampling (e.g. one STFT frame).
        max_seconds: read only this much from the start of the file (None: all of it).

    Returns:
        ``(signal (n_samples,) float32, sample_rate)``.

    Raises:
        ValueError: one line naming the file and what is wrong with it.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive (or None for the whole file), got {max_seconds}")
    path = _existing_file(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            frames = -1 if max_seconds is None else max(1, int(round(max_seconds * handle.samplerate)))
            data, rate = handle.read(frames, dtype="float32", always_2d=True), handle.samplerate
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: unreadable or corrupt audio ({reason})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or infinite samples")
    _check_channel(channel, data.shape[1], path)
    signal = _mono(data, channel)
    clipped = np.mean(np.abs(data) >= 0.999)
    if clipped > CLIP_FRACTION:
        warnings.warn(f"{path}: {100 * clipped:.2f}% of samples are at full scale (clipped)", UserWarning, stacklevel=2)
    if not np.any(signal):
        raise ValueError(f"{path}: silent (every sample is zero)")
    if np.all(signal == signal[0]):
        raise ValueError(f"{path}: silent (every sample has the same value, {signal[0]:.3g}: a constant offset, no sound)")
    if sample_rate is not None and sample_rate != rate:
        signal = resample(signal, rate, sample_rate)
        rate = sample_rate
    if signal.shape[0] < min_samples:
        raise ValueError(
            f"{path}: {signal.shape[0]} samples is shorter than one analysis frame ({min_samples} samples)"
        )
    return np.ascontiguousarray(signal, dtype=np.float32), int(rate)


def resample(signal: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(n,)`` from ``orig_rate`` to ``target_rate`` (librosa, soxr high quality)."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return np.asarray(signal, np.float32)
    return librosa.resample(np.asarray(signal, np.float32), orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq")


def write_audio(path: Union[str, Path], signal: np.ndarray, sample_rate: int) -> Path:
    """Write mono ``(n,)`` or ``(n, channels)`` audio; WAV as 32-bit float, FLAC as 24-bit PCM.

    Float WAV keeps estimates that exceed full scale intact (scores stay
    honest); FLAC cannot hold floats, so it is written as 24-bit and clipped.
    """
    path = Path(path)
    signal = np.asarray(signal, dtype=np.float32)
    if not np.all(np.isfinite(signal)):
        raise ValueError(f"{path}: refusing to write NaN or infinite samples")
    suffix = path.suffix.lower()
    if suffix == ".wav":
        subtype = "FLOAT"
    elif suffix == ".flac":
        subtype, signal = "PCM_24", np.clip(signal, -1.0, 1.0)
    else:
        raise ValueError(f"{path}: write .wav or .flac, not {suffix or 'a file without a suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), signal, int(sample_rate), subtype=subtype)
    return path


#: Headerless PCM sample formats for pipes: name -> (libsndfile subtype, little-endian numpy dtype).
PCM = {"f32": ("FLOAT", "<f4"), "s16": ("PCM_16", "<i2")}
#: The path that stands for standard input (``read_blocks``) or output (``PcmWriter``).
STDIO = "-"


def _pcm(name: str) -> tuple[str, str]:
    """``PCM[name]``, or a one-line error naming the formats there are."""
    if name not in PCM:
        raise ValueError(f"raw PCM format must be one of {', '.join(PCM)}, got {name!r}")
    return PCM[name]


def _open_stream(path, raw: Optional[tuple[int, str]]):
    """``(open() -> SoundFile, sample rate, channels, label)`` for a file, or for standard input (``path``
    ``"-"``: opened now, so that a stream without a readable header fails here, in one line)."""
    if str(path) != STDIO:
        path = _existing_file(path)
        try:
            info = sf.info(str(path))
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path}: unreadable or corrupt audio ({reason})") from None
        return (lambda: sf.SoundFile(str(path))), info.samplerate, info.channels, str(path)
    try:
        if raw is not None:
            rate, pcm = raw
            handle = sf.SoundFile(0, "r", samplerate=int(rate), channels=1, subtype=_pcm(pcm)[0], format="RAW",
                                  endian="LITTLE", closefd=False)
        else:
            handle = sf.SoundFile(0, closefd=False)
    except sf.LibsndfileError as err:
        hint = "" if raw is not None else "; for headerless PCM say its format and rate (--raw-input)"
        raise ValueError(f"standard input: not readable audio ({str(err).splitlines()[0]}){hint}") from None
    return (lambda: handle), handle.samplerate, handle.channels, "standard input"


def read_blocks(path: Union[str, Path], block_seconds: float = 1.0, sample_rate: Optional[int] = None,
                channel: Channel = "mean", raw: Optional[tuple[int, str]] = None) -> tuple[Iterator[np.ndarray], int]:
    """A recording as an iterator of mono float32 blocks ``(m,)`` of about ``block_seconds``, read
    one at a time (memory does not grow with the file), resampled on the fly to ``sample_rate``
    (soxr's streaming resampler) where it differs; and the rate of the blocks.

    ``path`` ``"-"`` reads standard input: a stream with a header (WAV, FLAC, ...), or with
    ``raw=(rate, pcm)`` headerless mono PCM (``pcm`` a key of ``PCM``: ``f32``, ``s16``), read as it
    arrives. The file or stream is opened and checked (missing, a folder, unreadable, a channel that
    does not exist) before this returns; NaN or infinite samples are reported by the block that holds them.
    """
    opener, source_rate, n_channels, label = _open_stream(path, raw)
    _check_channel(channel, n_channels, Path(label))
    rate = int(sample_rate or source_rate)
    block = max(1, int(round(block_seconds * source_rate)))

    def blocks() -> Iterator[np.ndarray]:
        resampler = None if rate == source_rate else soxr.ResampleStream(source_rate, rate, 1, dtype="float32",
                                                                          quality="HQ")
        done = 0
        with opener() as handle:
            while True:
                data = handle.read(block, dtype="float32", always_2d=True)
                last = data.shape[0] < block
                mono = _mono(data, channel)
                if not np.all(np.isfinite(mono)):
                    raise ValueError(f"{label}: contains NaN or infinite samples (near {done / source_rate:.1f} s)")
                done += data.shape[0]
                if resampler is not None:
                    mono = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
                yield np.ascontiguousarray(mono, dtype=np.float32)
                if last:
                    return

    return blocks(), rate


class PcmWriter:
    """Sources as the interleaved channels of one headerless little-endian PCM stream (standard output
    by default), written and flushed block by block; ``s16`` clips to [-1, 1)."""

    def __init__(self, pcm: str = "f32", stream=None) -> None:
        self.dtype = _pcm(pcm)[1]
        self.pcm = pcm
        self.stream = stream if stream is not None else sys.stdout.buffer

    def write(self, channels: Sequence[np.ndarray]) -> None:
        """One block: ``channels``, equal-length ``(m,)`` arrays, one per channel."""
        frames = np.stack([np.asarray(c, np.float32) for c in channels], axis=1)
        if not np.all(np.isfinite(frames)):
            raise ValueError("standard output: refusing to write NaN or infinite samples")
        if self.pcm == "s16":
            frames = np.round(np.clip(frames, -1.0, 1.0 - 2.0**-15) * 32768.0)
        self.stream.write(frames.astype(self.dtype).tobytes())
        self.stream.flush()


class AudioWriter:
    """Mono float32 audio written block by block to a WAV (32-bit float) or FLAC (24-bit) file."""

    def __init__(self, path: Union[str, Path], sample_rate: int) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".wav", ".flac"):
            raise ValueError(f"{self.path}: write .wav or .flac, not {suffix or 'a file without a suffix'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clip = suffix == ".flac"
        self._file = sf.SoundFile(str(self.path), "w", int(sample_rate), 1, "FLOAT" if suffix == ".wav" else "PCM_24")

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        if not np.all(np.isfinite(samples)):
            raise ValueError(f"{self.path}: refusing to write NaN or infinite samples")
        self._file.write(np.clip(samples, -1.0, 1.0) if self._clip else samples)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
