"""The `.codes` token file: a safetensors file holding the codes and the metadata needed to decode them.

Tensor `codes`: (Q, F) integers (int16 when every codebook has at most 32,768 codes, else int32).
Metadata (all strings, as safetensors requires): format, format_version, model_name, weights_sha256,
tokenizer_sha256 (of the encoder and quantizer alone; absent from files made before it was added), sample_rate,
frame_rate, num_samples, channels (of the source; the codes are of its mono downmix), codebook_sizes (JSON list,
one per stored codebook).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .audio import AtomicOutput
from .errors import TokenFileError

FORMAT = "codec-tokens"
FORMAT_VERSION = "1"


@dataclass
class TokenFile:
    codes: torch.Tensor          # (Q, F) int64 in memory
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


def save_tokens(path: str | Path, tokens: TokenFile, force: bool = False) -> None:
    dtype = torch.int16 if max(tokens.codebook_sizes) <= 2**15 else torch.int32
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_name": tokens.model_name,
        "weights_sha256": tokens.weights_sha256, "tokenizer_sha256": tokens.tokenizer_sha256,
        "sample_rate": str(tokens.sample_rate),
        "frame_rate": repr(float(tokens.frame_rate)), "num_samples": str(tokens.num_samples),
        "channels": str(tokens.channels), "codebook_sizes": json.dumps(tokens.codebook_sizes),
    }
    with AtomicOutput(path, force) as temporary:
        save_file({"codes": tokens.codes.to(dtype).contiguous()}, str(temporary), metadata=metadata)


def load_tokens(path: str | Path) -> TokenFile:
    """Read and validate a token file; anything wrong with it is a TokenFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path}: no such token file" if not path.is_dir() else f"{path}: is a directory")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT or "codes" not in handle.keys():
                raise TokenFileError(f"{path}: not a .codes token file")
            codes = handle.get_tensor("codes")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        if path.suffix.lower() != ".codes":
            raise TokenFileError(f"{path}: not a .codes token file") from None
        raise TokenFileError(f"{path}: corrupt or truncated token file ({str(error).splitlines()[0]})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise TokenFileError(f"{path}: token format version {metadata.get('format_version')} is not supported")
    try:
        tokens = TokenFile(
            codes=codes.long(), model_name=metadata["model_name"], weights_sha256=metadata["weights_sha256"],
            sample_rate=int(metadata["sample_rate"]), frame_rate=float(metadata["frame_rate"]),
            num_samples=int(metadata["num_samples"]), channels=int(metadata["channels"]),
            codebook_sizes=[int(k) for k in json.loads(metadata["codebook_sizes"])],
            tokenizer_sha256=metadata.get("tokenizer_sha256", ""))
    except (KeyError, ValueError, TypeError) as error:
        raise TokenFileError(f"{path}: token file metadata is incomplete ({error})") from None
    _validate(path, tokens)
    return tokens


def _validate(path: Path, tokens: TokenFile) -> None:
    if tokens.codes.dim() != 2 or tokens.codes.shape[0] != len(tokens.codebook_sizes):
        raise TokenFileError(f"{path}: codes shape {tuple(tokens.codes.shape)} does not match "
                             f"{len(tokens.codebook_sizes)} codebooks")
    expected = math.ceil(tokens.num_samples / tokens.sample_rate * tokens.frame_rate - 1e-6)
    if tokens.num_frames != expected:
        raise TokenFileError(f"{path}: {tokens.num_frames} frames for {tokens.num_samples} samples "
                             f"(expected {expected}); the file is truncated or inconsistent")
    limits = torch.tensor(tokens.codebook_sizes)[:, None]
    if tokens.codes.numel() and ((tokens.codes < 0) | (tokens.codes >= limits)).any():
        raise TokenFileError(f"{path}: codes out of range for codebook sizes {tokens.codebook_sizes}")
