"""The `.codes` file: the codes of one recording and the metadata needed to decode them (`CodesFile`), written
by `save_codes` and read back, checked, by `load_codes`.

A `.codes` file is a safetensors file. Tensor `codes`: (Q, F) integers (int16 when every codebook has at most
32,768 codes, else int32).
Metadata (all strings, as safetensors requires): format, format_version, model_name, weights_sha256,
tokenizer_sha256 (of the encoder and quantizer alone; absent from files made before it was added), sample_rate,
frame_rate, num_samples, channels (of the source; the codes are of its mono downmix), codebook_sizes (JSON list,
one per stored codebook), checksum (sha256 over the other metadata and the codes, see `_checksum`; absent from
files made before it was added, which load unchecked). The header is written here rather than by safetensors,
whose metadata order changes from run to run: the same input encodes to the same bytes. Reading accepts exactly
what writing produces; anything else is a CodesFileError of one line naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from . import audio as audio_io
from .errors import CodesFileError, printable
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
            shipped = self.shipped_model()
            raise CodesFileError(f"{source}: made by model '{self.model_name}' (weights {self.weights_sha256[:12]}), "
                                 f"not by the loaded model '{codec.name}' ({(codec.weights_sha256 or '')[:12]}); "
                                 + (f"pass --model {shipped}" if shipped else "pass that model with --model"))
        if self.codebook_sizes != codec.codebook_sizes[:self.num_codebooks] or self.sample_rate != codec.sample_rate:
            raise CodesFileError(f"{source}: {self.num_codebooks} codebooks of {self.codebook_sizes[0]} codes at "
                                 f"{self.sample_rate} Hz do not fit the model's {codec.num_codebooks} of "
                                 f"{codec.codebook_size} at {codec.sample_rate} Hz")
        if not math.isclose(self.frame_rate, codec.frame_rate, rel_tol=1e-9):
            raise CodesFileError(f"{source}: frame rate {self.frame_rate:g} Hz, where the model makes "
                                 f"{codec.frame_rate:g} Hz")

    def shipped_model(self) -> str | None:
        """The name of the shipped model (`codec.weights.SHIPPED`) whose weights made these codes, if one did."""
        from .weights import SHIPPED, sha256
        return next((name for name, path in SHIPPED.items()
                     if path.is_file() and sha256(path) == self.weights_sha256), None)

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
