"""File to file: audio -> .codes and .codes -> audio, through the streaming path so memory stays bounded.

Blocks are one second: the encoder's first layers run at the audio rate with 32-64 channels, so a 10 s block
made encoding peak at 0.8 GB of RSS (decoding, at the frame rate, 0.39 GB); 1 s blocks keep both at 0.39 GB and
encode as fast.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch

from . import audio as audio_io
from .errors import AudioError, CodecError, ModelError, OutputError, TokenFileError, printable
from .model import Codec
from .tokens import TokenFile, load_tokens, save_tokens, storage_dtype

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

    def finish(self) -> TokenFile:
        tail = self.stream.flush() if not self.stream.closed else None
        if self.samples == 0:
            raise AudioError(f"{self.source}: the audio is empty")
        codec, n = self.codec, self.stream.num_codebooks
        parts = [part.to(self.dtype) for part in self.parts + ([tail] if tail is not None else [])]
        tokens = TokenFile(codes=torch.cat(parts, dim=-1)[0].cpu(),
                           model_name=codec.name, weights_sha256=codec.weights_sha256 or "",
                           sample_rate=codec.sample_rate, frame_rate=codec.frame_rate, num_samples=self.samples,
                           channels=self.channels, codebook_sizes=codec.codebook_sizes[:n],
                           tokenizer_sha256=codec.tokenizer_sha256 or "")
        save_tokens(self.target, tokens, self.force)
        return tokens


def encode_files(codec: Codec, pairs: list[tuple[Path, Path]], num_codebooks: int | None = None,
                 force: bool = False, batch_size: int = 8, done=None, failed=None) -> list[TokenFile]:
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
                force: bool = False) -> TokenFile:
    """Encode one audio file (any format libsndfile reads, any rate, mono or downmixed) to a .codes file.

    Audio shorter than one frame is zero-padded to a frame; the sample count in the file trims it on decode.
    """
    return encode_files(codec, [(Path(source), Path(target))], num_codebooks, force)[0]


def check_model(codec: Codec, tokens: TokenFile, source: str | Path) -> None:
    """The model that made the codes, or one with the same encoder and quantizer (another decoder); and every
    field the decoding depends on as that model has it (a frame rate of 150 Hz decoded to half the audio)."""
    same_model = tokens.weights_sha256 == (codec.weights_sha256 or "") and tokens.model_name == codec.name
    if not same_model and not (tokens.tokenizer_sha256 and tokens.tokenizer_sha256 == codec.tokenizer_sha256):
        raise TokenFileError(f"{source}: made by model '{tokens.model_name}' (weights {tokens.weights_sha256[:12]}), "
                             f"not by the loaded model '{codec.name}' ({(codec.weights_sha256 or '')[:12]}); "
                             f"pass that model with --model")
    if tokens.codebook_sizes != codec.codebook_sizes[:tokens.num_codebooks] or tokens.sample_rate != codec.sample_rate:
        raise TokenFileError(f"{source}: {tokens.num_codebooks} codebooks of {tokens.codebook_sizes[0]} codes at "
                             f"{tokens.sample_rate} Hz do not fit the model's {codec.num_codebooks} of "
                             f"{codec.codebook_size} at {codec.sample_rate} Hz")
    if not math.isclose(tokens.frame_rate, codec.frame_rate, rel_tol=1e-9):
        raise TokenFileError(f"{source}: frame rate {tokens.frame_rate:g} Hz, where the model makes "
                             f"{codec.frame_rate:g} Hz")


def decode_file(codec: Codec, source: str | Path, target: str | Path, force: bool = False) -> TokenFile:
    """Decode a .codes file to audio at the model's rate (WAV, FLAC or OGG Vorbis by extension), block by block."""
    kind, subtype = check_decode(source, target, force)
    codes_file = load_tokens(source)
    check_model(codec, codes_file, source)
    frames_per_block = max(1, int(BLOCK_SECONDS * codec.frame_rate))
    decoder = codec.stream_decoder()
    device = next(codec.parameters()).device
    remaining = codes_file.num_samples
    try:
        with audio_io.AtomicOutput(target, force) as temporary, \
                soundfile.SoundFile(str(temporary), "w", codec.sample_rate, 1, subtype=subtype, format=kind) as out, \
                _audio_progress(f"decoding {Path(source).name}", codes_file.duration) as bar:
            for start in range(0, codes_file.num_frames, frames_per_block):
                block = decoder.push(codes_file.codes[None, :, start:start + frames_per_block].long().to(device))[0]
                block = block[:remaining].cpu().numpy()
                if not np.isfinite(block).all():  # written as PCM, NaN becomes full-scale noise
                    raise ModelError(f"{source}: the model decodes these codes to NaN or infinite samples "
                                     f"(near {start / codec.frame_rate:.1f} s); nothing was written")
                remaining -= len(block)
                out.write(np.clip(block, -1.0, 1.0))
                bar.update(len(block) / codec.sample_rate)
    finally:
        decoder.close()
    return codes_file


def _audio_progress(description: str, seconds: float):
    """A bar in seconds of audio (its rate: times real time) for one long file, which otherwise ran for minutes
    without a sign; shown once a file has taken PROGRESS_DELAY, and cleared when done."""
    from tqdm import tqdm
    shape = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]" if seconds > 0
             else "{desc}: {n:.0f} s of audio [{elapsed}]")  # 0: a format that does not tell its length
    return tqdm(total=round(seconds, 1) if seconds > 0 else None, desc=description, delay=PROGRESS_DELAY, leave=False,
                bar_format=shape, disable=None)  # None: on a terminal only, not into a log or a pipe


def pair_outputs(inputs: list[str], output: str, suffix: str,
                 input_suffixes: set[str]) -> tuple[list[tuple[Path, Path]], bool]:
    """Map inputs to outputs; returns (pairs, folder_mode). One file in: `output` is the file. Several inputs or
    a folder: `output` is a folder and each output keeps the input's path relative to the folder it came from,
    with a new suffix; folders are searched for files with `input_suffixes`."""
    sources = [Path(p) for p in inputs]
    if len(sources) == 1 and not sources[0].is_dir():
        return [(sources[0], Path(output))], False
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: several inputs or a folder need an output folder, and this is a file")
    if not out.exists() and out.suffix.lower() in audio_io.AUDIO_EXTENSIONS | {CODES_SUFFIX}:  # x.codes/: a slip
        raise OutputError(f"{out}: several inputs or a folder need an output folder, and this names a file")
    pairs = []
    for source in sources:
        if source.is_dir():
            files = audio_io.list_audio([source], input_suffixes)
            pairs += [(f, out / f.relative_to(source).with_suffix(suffix)) for f in files]
        else:
            pairs.append((source, out / source.with_suffix(suffix).name))
    if not pairs:
        raise CodecError(f"no input files found in {', '.join(inputs)}")
    sources_of: dict[Path, Path] = {}
    for source, target in pairs:
        if target in sources_of:
            raise CodecError(f"{sources_of[target]} and {source} would both write {target}; "
                             f"give them separate folders or runs")
        sources_of[target] = source
    return pairs, True


def make_output_folders(pairs: list[tuple[Path, Path]], folder_mode: bool) -> None:
    for folder in sorted({target.parent for _, target in pairs} if folder_mode else ()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{folder}: cannot create the output folder ({error.strerror})") from None


def report_failures(failures: int, total: int) -> int:
    if failures:
        print(f"error: {failures} of {total} files failed", file=sys.stderr)
    return 1 if failures else 0


def run_pairs(pairs: list[tuple[Path, Path]], folder_mode: bool, action, description: str) -> int:
    """Run `action(source, target)` over pairs with a progress bar; returns the exit code. In folder mode a
    failure is reported in one line and the others go on (exit code 1 at the end); for a single file the error
    ends the command."""
    from tqdm import tqdm
    make_output_folders(pairs, folder_mode)
    failures = 0
    for source, target in tqdm(pairs, desc=description, unit="file", disable=not folder_mode):
        try:
            action(source, target)
        except CodecError as error:
            if not folder_mode:
                raise
            failures += 1
            tqdm.write(f"error: {printable(str(error))}", file=sys.stderr)
    return report_failures(failures, len(pairs))


def run_encode(codec: Codec, pairs: list[tuple[Path, Path]], folder_mode: bool, num_codebooks: int | None,
               force: bool, batch_size: int = 8) -> int:
    """`codec encode`: `run_pairs` for encoding, `batch_size` files at a time (`encode_files`)."""
    from tqdm import tqdm
    make_output_folders(pairs, folder_mode)
    failures = 0
    with tqdm(total=len(pairs), desc="encoding", unit="file", disable=not folder_mode) as bar:
        def failed(source, error):
            nonlocal failures
            failures += 1
            bar.update()
            tqdm.write(f"error: {printable(str(error))}", file=sys.stderr)
        encode_files(codec, pairs, num_codebooks, force, batch_size, done=lambda source: bar.update(),
                     failed=failed if folder_mode else None)
    return report_failures(failures, len(pairs))
