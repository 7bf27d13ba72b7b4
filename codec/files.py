"""The `.codes` file, and file to file: audio -> .codes and .codes -> audio, through the streaming path so memory
stays bounded.

A `.codes` file is a safetensors file holding the codes and the metadata needed to decode them.
Tensor `codes`: (Q, F) integers (int16 when every codebook has at most 32,768 codes, else int32).
Metadata (all strings, as safetensors requires): format, format_version, model_name, weights_sha256,
tokenizer_sha256 (of the encoder and quantizer alone; absent from files made before it was added), sample_rate,
frame_rate, num_samples, channels (of the source; the codes are of its mono downmix), codebook_sizes (JSON list,
one per stored codebook), checksum (sha256 over the other metadata and the codes, see `_checksum`; absent from
files made before it was added, which load unchecked). The header is written here rather than by safetensors,
whose metadata order changes from run to run: the same input encodes to the same bytes. Reading accepts exactly
what writing produces; anything else is a CodesFileError of one line naming the file.

Audio is read in blocks of one second: the encoder's first layers run at the audio rate with 32-64 channels, so a
10 s block made encoding peak at 0.8 GB of RSS (decoding, at the frame rate, 0.39 GB); 1 s blocks keep both at
0.39 GB and encode as fast.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from safetensors import SafetensorError, safe_open

from . import audio as audio_io
from .errors import AudioError, CodecError, CodesFileError, ModelError, OutputError, printable
from .model import Codec

FORMAT = "codec-tokens"
FORMAT_VERSION = "1"
REQUIRED = {"format", "format_version", "model_name", "weights_sha256", "sample_rate", "frame_rate", "num_samples",
            "channels", "codebook_sizes"}
OPTIONAL = {"tokenizer_sha256", "checksum"}
MAX_CODEBOOK_SIZE = 2**31  # codes are stored as int32 at most
MAX_SAMPLE_RATE = 10**7
DTYPES = {torch.int16: "I16", torch.int32: "I32"}


@dataclass
class CodesFile:
    codes: torch.Tensor          # (Q, F) integers; as stored (int16 or int32) when read or encoded
    model_name: str
    weights_sha256: str
    sample_rate: int
    frame_rate: float
    num_samples: int
    channels: int
    codebook_sizes: list[int]
    tokenizer_sha256: str = ""   # empty in files made before it was recorded

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[0]

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def bitrate(self) -> float:
        """Nominal bits per second."""
        return self.frame_rate * sum(math.log2(k) for k in self.codebook_sizes)

    def check_model(self, codec: Codec, source: str | Path) -> None:
        """Refuse a model that cannot decode these codes: only the model that made them, or one with the same
        encoder and quantizer (another decoder), will do; and every field the decoding depends on must be as that
        model has it (a frame rate of 150 Hz decoded to half the audio). `source` names the file in the error."""
        same_model = self.weights_sha256 == (codec.weights_sha256 or "") and self.model_name == codec.name
        if not same_model and not (self.tokenizer_sha256 and self.tokenizer_sha256 == codec.tokenizer_sha256):
            raise CodesFileError(f"{source}: made by model '{self.model_name}' (weights {self.weights_sha256[:12]}), "
                                 f"not by the loaded model '{codec.name}' ({(codec.weights_sha256 or '')[:12]}); "
                                 f"pass that model with --model")
        if self.codebook_sizes != codec.codebook_sizes[:self.num_codebooks] or self.sample_rate != codec.sample_rate:
            raise CodesFileError(f"{source}: {self.num_codebooks} codebooks of {self.codebook_sizes[0]} codes at "
                                 f"{self.sample_rate} Hz do not fit the model's {codec.num_codebooks} of "
                                 f"{codec.codebook_size} at {codec.sample_rate} Hz")
        if not math.isclose(self.frame_rate, codec.frame_rate, rel_tol=1e-9):
            raise CodesFileError(f"{source}: frame rate {self.frame_rate:g} Hz, where the model makes "
                                 f"{codec.frame_rate:g} Hz")

    def describe(self, path: str | Path) -> str:
        """What `codec info` prints: the model, rates, size, duration and bitrate (names made printable: a name
        may hold a newline or a terminal escape)."""
        tokenizer = f", tokenizer {self.tokenizer_sha256[:16]}" if self.tokenizer_sha256 else ""
        return (f"{printable(str(path))}\n  model: {printable(self.model_name)} (weights sha256 "
                f"{self.weights_sha256[:16]}{tokenizer})\n  sample rate: {self.sample_rate} Hz, frame rate: "
                f"{self.frame_rate:g} Hz\n  frames: {self.num_frames}, codebooks: {self.num_codebooks} x "
                f"{self.codebook_sizes[0]} codes\n  duration: {self.duration:.3f} s ({self.num_samples} samples, "
                f"source channels: {self.channels})\n  nominal bitrate: {self.bitrate / 1000:.3g} kbps")


def storage_dtype(codebook_sizes: list[int]) -> torch.dtype:
    """The narrowest integer type of a file's codes: 2 bytes a code (4 above 32,768 codes) against int64's 8 keeps
    hours of codes small in memory too."""
    return torch.int16 if max(codebook_sizes) <= 2**15 else torch.int32


def _checksum(metadata: dict[str, str], dtype: torch.dtype, codes: torch.Tensor) -> str:
    """sha256 of every other metadata field (sorted), the dtype and shape, and the codes' little-endian bytes."""
    digest = hashlib.sha256()
    for key in sorted(set(metadata) - {"checksum"}):
        digest.update(f"{key}={metadata[key]}\n".encode())
    digest.update(f"{DTYPES[dtype]} {list(codes.shape)}\n".encode())
    digest.update(_little_endian(codes, dtype))
    return digest.hexdigest()


def save_codes(path: str | Path, codes_file: CodesFile, force: bool = False) -> None:
    dtype = storage_dtype(codes_file.codebook_sizes)
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_name": codes_file.model_name,
        "weights_sha256": codes_file.weights_sha256, "tokenizer_sha256": codes_file.tokenizer_sha256,
        "sample_rate": str(codes_file.sample_rate),
        "frame_rate": repr(float(codes_file.frame_rate)), "num_samples": str(codes_file.num_samples),
        "channels": str(codes_file.channels), "codebook_sizes": json.dumps(codes_file.codebook_sizes),
    }
    metadata["checksum"] = _checksum(metadata, dtype, codes_file.codes)
    data = _little_endian(codes_file.codes, dtype)
    header = json.dumps({"__metadata__": dict(sorted(metadata.items())),
                         "codes": {"dtype": DTYPES[dtype], "shape": list(codes_file.codes.shape),
                                   "data_offsets": [0, data.nbytes]}}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes so that the data is aligned
    with audio_io.AtomicOutput(path, force) as temporary, open(temporary, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.write(data)


def _little_endian(codes: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """The codes' bytes as stored, without a copy when they are held so already (as encode_file holds them)."""
    array = codes.to(dtype).contiguous().numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)


def load_codes(path: str | Path) -> CodesFile:
    """Read and validate a codes file; anything wrong with it is a CodesFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CodesFileError(f"{path}: no such codes file" if not path.is_dir() else f"{path}: is a directory")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT or list(handle.keys()) != ["codes"]:
                raise CodesFileError(f"{path}: not a .codes file")
            codes = handle.get_tensor("codes")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        if path.suffix.lower() != ".codes":
            raise CodesFileError(f"{path}: not a .codes file") from None
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CodesFileError(f"{path}: corrupt or truncated codes file ({printable(message)})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CodesFileError(f"{path}: codes file format version {printable(str(metadata.get('format_version'))[:40])} "
                             f"is not supported")
    codes_file = _parse(path, metadata, codes)
    if "checksum" in metadata and metadata["checksum"] != _checksum(metadata, codes.dtype, codes):
        raise CodesFileError(f"{path}: checksum mismatch: the codes or their metadata were changed or damaged "
                             f"after writing")
    if ((codes_file.codes < 0) | (codes_file.codes >= torch.tensor(codes_file.codebook_sizes)[:, None])).any():
        raise CodesFileError(f"{path}: codes out of range for codebook sizes {codes_file.codebook_sizes}")
    return codes_file


def _parse(path: Path, metadata: dict[str, str], codes: torch.Tensor) -> CodesFile:
    def refuse(message: str):
        raise CodesFileError(f"{path}: {message}")

    missing, unknown = sorted(REQUIRED - set(metadata)), sorted(set(metadata) - REQUIRED - OPTIONAL)
    if missing:
        refuse(f"codes file metadata is incomplete (no '{missing[0]}')")
    if unknown:
        refuse(f"unknown codes file metadata '{printable(unknown[0][:40])}'")

    def integer(key: str, lowest: int, highest: int) -> int:
        text = metadata[key]
        if not re.fullmatch(r"-?[0-9]{1,19}", text) or not lowest <= int(text) <= highest:
            refuse(f"{key} {text[:40]!r} is not a whole number from {lowest} to {highest}")
        return int(text)

    for key in ("weights_sha256", "tokenizer_sha256"):
        if not re.fullmatch(r"([0-9a-f]{64})?", metadata.get(key, "")):
            refuse(f"{key} {metadata[key][:70]!r} is not a sha256 in hexadecimal")
    sample_rate = integer("sample_rate", 1, MAX_SAMPLE_RATE)
    num_samples = integer("num_samples", 1, 2**62)
    channels = integer("channels", 1, 2**16)
    try:
        frame_rate = float(metadata["frame_rate"])
    except ValueError:
        frame_rate = math.nan
    if not 0 < frame_rate <= sample_rate:  # nan too
        refuse(f"frame_rate {metadata['frame_rate'][:40]!r} is not a rate above 0 and at most the "
               f"sample rate")
    try:
        sizes = json.loads(metadata["codebook_sizes"])
    except (ValueError, RecursionError):
        sizes = None
    if not (isinstance(sizes, list) and sizes and all(type(k) is int and 2 <= k <= MAX_CODEBOOK_SIZE for k in sizes)):
        refuse(f"codebook_sizes {metadata['codebook_sizes'][:40]!r} is not a list of whole numbers "
               f"from 2 to {MAX_CODEBOOK_SIZE}")
    if codes.dtype != storage_dtype(sizes):
        refuse(f"codes stored as {str(codes.dtype).removeprefix('torch.')}, where codebooks of "
               f"{max(sizes)} codes are {str(storage_dtype(sizes)).removeprefix('torch.')}")
    if codes.dim() != 2 or codes.shape[0] != len(sizes):
        refuse(f"codes shape {tuple(codes.shape)} does not match {len(sizes)} codebooks")
    expected = math.ceil(num_samples / sample_rate * frame_rate - 1e-6)
    if codes.shape[1] != expected:
        refuse(f"{codes.shape[1]} frames for {num_samples} samples (expected {expected}); the file is truncated "
               f"or inconsistent")
    return CodesFile(codes, metadata["model_name"], metadata["weights_sha256"], sample_rate, frame_rate,
                     num_samples, channels, sizes, metadata.get("tokenizer_sha256", ""))


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
