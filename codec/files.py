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
TOKEN_SUFFIX = ".codes"
PROGRESS_DELAY = 2.0  # seconds a file takes before its bar shows


def _not_the_input(source: str | Path, target: str | Path) -> None:
    if Path(source).exists() and Path(target).exists() and os.path.samefile(source, target):  # links too
        raise OutputError(f"{target}: is the input file; write the output somewhere else")


def check_encode(source: str | Path, target: str | Path, force: bool = False) -> soundfile._SoundFileInfo:
    """Refuse a bad encode before any work: the input (missing, not audio) and the output (not a .codes name, the
    input itself even with --force, existing without it, unwritable). Returns the input's info.

    Only .codes names are written: `codec encode a.wav b.wav --force` would otherwise replace audio with tokens.
    """
    meta = audio_io.info(source)
    _not_the_input(source, target)
    if Path(target).suffix.lower() != TOKEN_SUFFIX:
        raise OutputError(f"{target}: a token file's name must end in {TOKEN_SUFFIX}")
    audio_io.check_output(target, force)
    return meta


def check_decode(source: str | Path, target: str | Path, force: bool = False) -> tuple[str, str]:
    """Refuse a bad decode output before any work, as `check_encode` does; returns its (format, subtype)."""
    _not_the_input(source, target)
    kind = audio_io.output_format(target)
    audio_io.check_output(target, force)
    return kind


def encode_file(codec: Codec, source: str | Path, target: str | Path, num_codebooks: int | None = None,
                force: bool = False) -> TokenFile:
    """Encode one audio file (any format libsndfile reads, any rate, mono or downmixed) to a .codes file.

    Audio shorter than one frame is zero-padded to a frame; the sample count in the file trims it on decode.
    """
    meta = check_encode(source, target, force)
    encoder = codec.stream_encoder(num_codebooks)
    sizes = codec.codebook_sizes[:num_codebooks or codec.num_codebooks]
    dtype = storage_dtype(sizes)  # int64 codes of a 3-hour file held 52 MB, then twice that at the end
    parts, samples = [], 0
    device = next(codec.parameters()).device
    try:
        with _audio_progress(f"encoding {Path(source).name}", meta.frames / meta.samplerate) as bar:
            for block in audio_io.blocks(source, codec.sample_rate, BLOCK_SECONDS):
                samples += len(block)
                parts.append(encoder.push(block.to(device)[None, None]).to(dtype))
                bar.update(len(block) / codec.sample_rate)
    finally:
        tail = encoder.flush()
    if tail is not None:
        parts.append(tail.to(dtype))
    if samples == 0:
        raise AudioError(f"{source}: the audio is empty")
    tokens = TokenFile(torch.cat(parts, dim=-1)[0].cpu(), codec.name, codec.weights_sha256 or "",
                       codec.sample_rate, codec.frame_rate, samples, meta.channels, sizes, codec.tokenizer_sha256 or "")
    save_tokens(target, tokens, force)
    return tokens


def check_model(codec: Codec, tokens: TokenFile, source: str | Path) -> None:
    """The model that made the tokens, or one with the same encoder and quantizer (another decoder); and every
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
    tokens = load_tokens(source)
    check_model(codec, tokens, source)
    frames_per_block = max(1, int(BLOCK_SECONDS * codec.frame_rate))
    decoder = codec.stream_decoder()
    device = next(codec.parameters()).device
    remaining = tokens.num_samples
    try:
        with audio_io.AtomicOutput(target, force) as temporary, \
                soundfile.SoundFile(str(temporary), "w", codec.sample_rate, 1, subtype=subtype, format=kind) as out, \
                _audio_progress(f"decoding {Path(source).name}", tokens.duration) as bar:
            for start in range(0, tokens.num_frames, frames_per_block):
                block = decoder.push(tokens.codes[None, :, start:start + frames_per_block].long().to(device))[0]
                block = block[:remaining].cpu().numpy()
                if not np.isfinite(block).all():  # written as PCM, NaN becomes full-scale noise
                    raise ModelError(f"{source}: the model decodes these codes to NaN or infinite samples "
                                     f"(near {start / codec.frame_rate:.1f} s); nothing was written")
                remaining -= len(block)
                out.write(np.clip(block, -1.0, 1.0))
                bar.update(len(block) / codec.sample_rate)
    finally:
        decoder.close()
    return tokens


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
    if not out.exists() and out.suffix.lower() in audio_io.AUDIO_EXTENSIONS | {TOKEN_SUFFIX}:  # x.codes/: a slip
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


def run_pairs(pairs: list[tuple[Path, Path]], folder_mode: bool, action, description: str) -> int:
    """Run `action(source, target)` over pairs with a progress bar; returns the exit code. In folder mode a
    failure is reported in one line and the others go on (exit code 1 at the end); for a single file the error
    ends the command."""
    from tqdm import tqdm
    for folder in sorted({target.parent for _, target in pairs} if folder_mode else ()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{folder}: cannot create the output folder ({error.strerror})") from None
    failures = 0
    for source, target in tqdm(pairs, desc=description, unit="file", disable=not folder_mode):
        try:
            action(source, target)
        except CodecError as error:
            if not folder_mode:
                raise
            failures += 1
            tqdm.write(f"error: {printable(str(error))}", file=sys.stderr)
    if failures:
        print(f"error: {failures} of {len(pairs)} files failed", file=sys.stderr)
    return 1 if failures else 0
