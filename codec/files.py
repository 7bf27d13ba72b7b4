"""File to file: audio -> .codes and .codes -> audio (`encode_files`, `decode_files`), through the streaming path
so memory stays bounded; the format itself is `codes_file.py`'s.

Audio is read in blocks of one second: the encoder's first layers run at the audio rate with 32-64 channels, so a
10 s block made encoding peak at 0.8 GB of RSS (decoding, at the frame rate, 0.39 GB); 1 s blocks keep both at
0.39 GB and encode as fast.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import torch

from . import audio as audio_io
from .errors import AudioError, CodecError, ModelError, OutputError
from .model import Codec
from .codes_file import CodesFile, load_codes, save_codes, storage_dtype


BLOCK_SECONDS = 1.0
CODES_SUFFIX = ".codes"
PROGRESS_DELAY = 2.0  # seconds a file takes before its bar shows


def _not_the_input(source: str | Path, target: str | Path) -> None:
    if Path(source).exists() and Path(target).exists() and os.path.samefile(source, target):  # links too
        raise OutputError(f"{target}: is the input file; write the output somewhere else")


def check_encode(source: str | Path, target: str | Path, force: bool = False) -> soundfile._SoundFileInfo:
    """Refuse a bad encode before any work: the input (missing, not audio) and the output (not a .codes name, the
    input itself even with --force, existing without it, unwritable). Returns the input's info.

    Only .codes names are written: `codec encode a.wav b.wav --force` would otherwise replace audio with codes.
    """
    meta = audio_io.info(source)
    _not_the_input(source, target)
    if Path(target).suffix.lower() != CODES_SUFFIX:
        raise OutputError(f"{target}: a codes file's name must end in {CODES_SUFFIX}")
    audio_io.check_output_file(target, force)
    return meta


def check_decode(source: str | Path, target: str | Path, force: bool = False) -> tuple[str, str]:
    """Refuse a bad decode output before any work, as `check_encode` does; returns its (format, subtype)."""
    _not_the_input(source, target)
    kind = audio_io.output_format(target)
    audio_io.check_output_file(target, force)
    return kind


class _FileEncoding:
    """One file on its way to a .codes file: its blocks, its stream, the codes so far."""

    def __init__(self, codec: Codec, source: str | Path, target: str | Path, num_codebooks: int | None,
                 force: bool, progress: bool = False) -> None:
        meta = check_encode(source, target, force)
        self.channels = meta.channels
        self.codec, self.source, self.target, self.force = codec, source, target, force
        self.blocks = audio_io.blocks(source, codec.sample_rate, BLOCK_SECONDS)
        self.stream = codec.stream_encoder(num_codebooks)
        # int64 codes of a 3-hour file held 52 MB, then twice that at the end
        self.dtype = storage_dtype(codec.codebook_sizes[:num_codebooks or codec.num_codebooks])
        self.parts: list[torch.Tensor] = []
        self.samples = 0
        self.bar = _audio_progress(f"encoding {Path(source).name}", meta.frames / meta.samplerate) if progress \
            else None

    def next_block(self) -> torch.Tensor | None:
        block = next(self.blocks, None)
        if block is not None:
            self.samples += len(block)
            if self.bar is not None:
                self.bar.update(len(block) / self.codec.sample_rate)
            return block.to(next(self.codec.parameters()).device)[None, None]
        if self.bar is not None:
            self.bar.close()
        return None

    def finish(self) -> CodesFile:
        tail = self.stream.flush() if not self.stream.closed else None
        if self.samples == 0:
            raise AudioError(f"{self.source}: the audio is empty")
        codec, n = self.codec, self.stream.num_codebooks
        parts = [part.to(self.dtype) for part in self.parts + ([tail] if tail is not None else [])]
        codes_file = CodesFile(codes=torch.cat(parts, dim=-1)[0].cpu(),
                               model_name=codec.name, weights_sha256=codec.weights_sha256 or "",
                               sample_rate=codec.sample_rate, frame_rate=codec.frame_rate, num_samples=self.samples,
                               channels=self.channels, codebook_sizes=codec.codebook_sizes[:n],
                               tokenizer_sha256=codec.tokenizer_sha256 or "")
        save_codes(self.target, codes_file, self.force)
        return codes_file


def encode_files(codec: Codec, pairs: list[tuple[Path, Path]], num_codebooks: int | None = None,
                 force: bool = False, batch_size: int = 8, done=None, failed=None) -> list[CodesFile]:
    """Encode (source, target) pairs, `batch_size` files at a time: each file has its own stream, and the streams
    step together one block per file per batched model call (`Codec.encode_streams`), so every file's codes are
    those of encoding it alone. `done(source)` follows each file; `failed(source, error)` gets a file's
    CodecError, and the others go on (without it, the error ends the run)."""
    waiting, live, written = list(pairs)[::-1], [], []

    def fail(source, error):
        if failed is None:
            raise error
        failed(source, error)

    try:
        while waiting or live:
            while waiting and len(live) < batch_size:
                source, target = waiting.pop()
                try:
                    live.append(_FileEncoding(codec, source, target, num_codebooks, force, len(pairs) == 1))
                except CodecError as error:
                    fail(source, error)
            pushes = {}
            for job in list(live):
                try:
                    block = job.next_block()
                    if block is None:
                        live.remove(job)
                        written.append(job.finish())
                        if done:
                            done(job.source)
                    else:
                        pushes[job] = block
                except CodecError as error:
                    job.stream.close()
                    live.remove(job)
                    fail(job.source, error)
            if pushes:
                codes = codec.encode_streams({job.stream: block for job, block in pushes.items()})
                for job in pushes:
                    job.parts.append(codes[job.stream])
    finally:
        for job in live:
            job.stream.close()
    return written


def encode_file(codec: Codec, source: str | Path, target: str | Path, num_codebooks: int | None = None,
                force: bool = False) -> CodesFile:
    """Encode one audio file (any format libsndfile reads, any rate, mono or downmixed) to a .codes file.

    Audio shorter than one frame is zero-padded to a frame; the sample count in the file trims it on decode.
    """
    return encode_files(codec, [(Path(source), Path(target))], num_codebooks, force)[0]


def decode_file(codec: Codec, source: str | Path, target: str | Path, force: bool = False) -> CodesFile:
    """Decode a .codes file to audio at the model's rate (WAV, FLAC or OGG Vorbis by extension), block by block."""
    kind, subtype = check_decode(source, target, force)
    codes_file = load_codes(source)
    codes_file.check_model(codec, source)
    frames_per_block = max(1, int(BLOCK_SECONDS * codec.frame_rate))
    decoder = codec.stream_decoder()
    device = next(codec.parameters()).device
    samples = codes_file.num_samples
    try:
        with audio_io.AtomicOutput(target, force) as temporary, \
                soundfile.SoundFile(str(temporary), "w", codec.sample_rate, 1, subtype=subtype, format=kind) as out, \
                _audio_progress(f"decoding {Path(source).name}", codes_file.duration) as bar:
            written = 0
            for block in _decoded_blocks(decoder, codes_file.codes, frames_per_block, device):
                block = block[0, :samples - written].cpu().numpy()
                if not np.isfinite(block).all():  # written as PCM, NaN becomes full-scale noise
                    raise ModelError(f"{source}: the model decodes these codes to NaN or infinite samples "
                                     f"(near {written / codec.sample_rate:.1f} s); nothing was written")
                written += len(block)
                out.write(np.clip(block, -1.0, 1.0))
                bar.update(len(block) / codec.sample_rate)
    finally:
        decoder.close()
    return codes_file


def _decoded_blocks(decoder, codes: torch.Tensor, frames_per_block: int, device):
    """The stream decoder's audio for codes (Q, F) pushed block by block, then its flush: a refiner that reads
    frames ahead holds the last ones back until then."""
    for start in range(0, codes.shape[-1], frames_per_block):
        yield decoder.push(codes[None, :, start:start + frames_per_block].long().to(device))
    last = decoder.flush()
    if last is not None:
        yield last


def decode_files(codec: Codec, pairs: list[tuple[Path, Path]], force: bool = False, done=None,
                 failed=None) -> list[CodesFile]:
    """Decode (source, target) pairs one after the other; `done` and `failed` as for `encode_files`."""
    decoded = []
    for source, target in pairs:
        try:
            decoded.append(decode_file(codec, source, target, force))
        except CodecError as error:
            if failed is None:
                raise
            failed(source, error)
            continue
        if done:
            done(source)
    return decoded


def _audio_progress(description: str, seconds: float):
    """A bar in seconds of audio (its rate: times real time) for one long file, which otherwise ran for minutes
    without a sign; shown once a file has taken PROGRESS_DELAY, and cleared when done."""
    from tqdm import tqdm
    shape = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]" if seconds > 0
             else "{desc}: {n:.0f} s of audio [{elapsed}]")  # 0: a format that does not tell its length
    return tqdm(total=round(seconds, 1) if seconds > 0 else None, desc=description, delay=PROGRESS_DELAY, leave=False,
                bar_format=shape, disable=None)  # None: on a terminal only, not into a log or a pipe
