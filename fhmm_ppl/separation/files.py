"""Separating a file or a pipe block by block (``fhmm-ppl separate --stream``, ``-`` in or out).

Audio is read a block at a time (``audio.io.read_blocks``: a file, or standard input with or without
a header), separated by ``Separator.stream`` and written as it comes: one file per source
(``audio.io.AudioWriter``) or interleaved raw PCM on standard output (``audio.io.PcmWriter``).
Memory does not grow with the input. A separator that fits itself to each mixture (its spectra
scaled to the recording's level, ``separation.level``; the noise's refined, ``separation.refinement``)
is fitted to the recording's first seconds before its stream starts (``Separator.stream``'s
``fit_seconds``, ``streaming.fitted_on_head``): a file's first ``REFINE_HEAD``, standard input's
first ``PIPE_HEAD``, whose estimates therefore start that much later (``--live``: as trained until
then, ``streaming.handed_over``). On real talkers recorded 10 dB louder than their training audio,
a stream with the spectra as trained lost 2.4 dB of speech SDRi against one fitted to the whole 4 s
recording; fitted to its first 0.5 / 1 / 2 / 3 s it lost 0.9 / 0.5 / 0.4 / 0.1 (docs/benchmarks.md,
"Fitting a stream").
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from fhmm_ppl.audio.io import AudioWriter, PcmWriter, read_blocks

#: seconds at the start of a streamed file that a separator is fitted to (level, refinement; bounded
#: memory; on real speech a few seconds of mixture already carry most of what refinement gains)
REFINE_HEAD = 60.0
#: the same for standard input, which is held back while it is read: its estimates start this late
PIPE_HEAD = 3.0


def pcm_sink(separator, sources: Optional[list[str]], pcm: str):
    """``(PcmWriter on standard output, the names of the sources it writes as channels)``: ``sources``
    (``None``: all of the separator's), checked, in one line."""
    names = list(sources or separator.names)
    missing = [n for n in names if n not in separator.names]
    if missing:
        raise ValueError(f"--source {missing[0]}: no such source; the separator's sources: {', '.join(separator.names)}")
    return PcmWriter(pcm), names  # PcmWriter checks the format


def head_seconds(mixture: Path) -> float:
    """The seconds at the start of ``mixture`` (a file, or ``-``) a separator is fitted to by default."""
    return PIPE_HEAD if str(mixture) == "-" else REFINE_HEAD


def separate_streaming(separator, mixture: Path, output: Path, lag: float, block: float, duration: float,
                        raw=None, sink=None, head: Optional[float] = None, live: bool = False) -> list:
    """Separate ``mixture`` (a file, or ``-``: standard input, ``raw=(rate, pcm)`` where headerless) block by
    block with ``Separator.stream``, writing each source's estimate as it comes (memory does not grow with the
    input) to files in ``output``, or to ``sink`` (``pcm_sink``: raw PCM on standard output), with a progress
    bar in seconds of audio (``duration``; 0: unknown); the estimates' paths (``["-"]`` for standard output).
    The separator is first fitted to the first ``head`` seconds (``streaming.fitted_on_head``; ``None``:
    ``head_seconds``, 0: not at all; ``live``: separated as trained until then, ``streaming.handed_over``)."""
    if not block > 0:
        raise ValueError(f"--block must be positive seconds, got {block}")
    head = head_seconds(mixture) if head is None else head
    if not head >= 0:
        raise ValueError(f"--fit-seconds must be 0 or more seconds, got {head}")
    blocks, rate = read_blocks(mixture, block, sample_rate=separator.sample_rate, raw=raw)
    stem = "stdin" if str(mixture) == "-" else mixture.stem
    paths = {} if sink else {name: output / f"{stem}_{name}.wav" for name in separator.names}
    writers = {name: AudioWriter(path, rate) for name, path in paths.items()}
    try:
        with tqdm(total=round(duration, 1) or None, unit="s", desc="separating", leave=False, disable=None) as bar:
            for pieces in separator.stream(blocks, lag=lag, fit_seconds=head, live=live):
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

