"""Separating a file or a pipe block by block (``fhmm-ppl separate --stream``, ``-`` in or out).

Audio is read a block at a time (``audio.io.read_blocks``: a file, or standard input with or without
a header), separated by ``Separator.stream`` and written as it comes: one file per source
(``audio.io.AudioWriter``) or interleaved raw PCM on standard output (``audio.io.PcmWriter``).
Memory does not grow with the input. A separator that fits itself to each mixture (its spectra
scaled to the recording's level, ``separation.level``; the noise's refined, ``separation.refinement``)
is fitted to a file's first ``REFINE_HEAD`` seconds before its stream starts (standard input is
separated as it arrives, with the spectra as trained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from fhmm_ppl.audio.io import AudioWriter, PcmWriter, read_blocks

#: seconds at the start of a streamed file that a separator is fitted to (level, refinement; bounded
#: memory; on real speech a few seconds of mixture already carry most of what refinement gains)
REFINE_HEAD = 60.0


def pcm_sink(separator, sources: Optional[list[str]], pcm: str):
    """``(PcmWriter on standard output, the names of the sources it writes as channels)``: ``sources``
    (``None``: all of the separator's), checked, in one line."""
    names = list(sources or separator.names)
    missing = [n for n in names if n not in separator.names]
    if missing:
        raise ValueError(f"--source {missing[0]}: no such source; the separator's sources: {', '.join(separator.names)}")
    return PcmWriter(pcm), names  # PcmWriter checks the format


def separate_streaming(separator, mixture: Path, output: Path, lag: float, block: float, duration: float,
                        raw=None, sink=None) -> list:
    """Separate ``mixture`` (a file, or ``-``: standard input, ``raw=(rate, pcm)`` where headerless) block by
    block with ``Separator.stream``, writing each source's estimate as it comes (memory does not grow with the
    input) to files in ``output``, or to ``sink`` (``pcm_sink``: raw PCM on standard output), with a progress
    bar in seconds of audio (``duration``; 0: unknown); the estimates' paths (``["-"]`` for standard output)."""
    if not block > 0:
        raise ValueError(f"--block must be positive seconds, got {block}")
    separator = refined_on_head(separator, mixture)
    blocks, rate = read_blocks(mixture, block, sample_rate=separator.sample_rate, raw=raw)
    stem = "stdin" if str(mixture) == "-" else mixture.stem
    paths = {} if sink else {name: output / f"{stem}_{name}.wav" for name in separator.names}
    writers = {name: AudioWriter(path, rate) for name, path in paths.items()}
    try:
        with tqdm(total=round(duration, 1) or None, unit="s", desc="separating", leave=False, disable=None) as bar:
            for pieces in separator.stream(blocks, lag=lag):
                if sink:
                    sink[0].write([pieces[name] for name in sink[1]])
                for name, samples in pieces.items():
                    if name in writers:
                        writers[name].write(samples)
                bar.update(round(len(next(iter(pieces.values()))) / rate, 3))
    finally:
        for writer in writers.values():
            writer.close()
    return list(paths.values()) or ["-"]


def refined_on_head(separator, mixture: Path):
    """``separator`` fitted (level, refined spectra) to the first ``REFINE_HEAD`` seconds of the file
    ``mixture`` where it fits to a recording (``Separator.fits_recording``) and the file holds at least a
    frame; else as it is."""
    if str(mixture) == "-" or not separator.fits_recording:
        return separator
    blocks, _ = read_blocks(mixture, REFINE_HEAD, sample_rate=separator.sample_rate)
    head = next(iter(blocks))
    return separator.refine(head) if head.shape[0] >= separator.options.stft.n_fft else separator
