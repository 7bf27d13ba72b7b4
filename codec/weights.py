"""The weights file: a safetensors file whose metadata holds the model config and a format version
(`save_weights`, `load_weights`, `load("bundled")`), and the hashes a `.codes` file records of it: the whole
file's, and the tokenizer's (encoder and quantizer alone)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .audio import AtomicOutput
from .config import ModelConfig, from_dict, to_dict
from .errors import CodecError, ModelError
from .model import Codec

FORMAT = "codec-weights"
FORMAT_VERSION = "1"
BUNDLED = Path(__file__).parent / "pretrained" / "bundled.safetensors"
LOW_LATENCY = BUNDLED.parent / "low-latency.safetensors"
# The models shipped with the package, by the name a command line or `load` takes. "bundled", the default (also
# "world", its family's name): WORLD's analysis, fitted codebooks and the harmonic head (docs/world-codec.md);
# streams have 2.27 s of latency. "low-latency": the learned SEANet encoder, residual SimVQ and harmonic decoder,
# the bundled model until 2026-12-06: 13.3 ms of latency and ONNX graphs, at far lower quality.
SHIPPED = {"bundled": BUNDLED, "world": BUNDLED, "low-latency": LOW_LATENCY}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the encoder's and the quantizer's tensors as the model computes with them (floats in float32, as
    `load_weights` casts them). Two weights files that share it turn audio into the same codes and codes into the
    same latents, whatever their decoders: tokens made with one decode with the other (a model whose decoder alone
    was trained on, say, and saved in another precision)."""
    digest = hashlib.sha256()
    for key in sorted(k for k in state if k.startswith(("encoder.", "quantizer."))):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        if tensor.is_floating_point():
            # -0.0 and 0.0 are the same weight, but not the same bytes: an EMA of a frozen weight (lerp from a
            # value to itself) turns one into the other.
            tensor = tensor.float() + 0.0
        digest.update(f"{key} {tensor.dtype} {tuple(state[key].shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(codec: Codec, path: str | Path, dtype: torch.dtype = torch.float32,
                 extra: dict[str, str] | None = None, force: bool = True) -> None:
    """Write the model's state (cast to `dtype`) with its config in the metadata, atomically."""
    if any(k.endswith(".conv.weight") for k in codec.state_dict()):
        raise ModelError("this model was loaded for inference (weight norm folded); load it with for_training=True")
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in codec.state_dict().items()}
    _check_finite(Path(path), state)  # refused on load: refuse to write it
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(to_dict(codec.config)),
                **(extra or {})}
    with AtomicOutput(path, force=force) as temporary:
        save_file(state, str(temporary), metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path}: not a safetensors weights file ({error})") from None


def read_config(path: str | Path) -> ModelConfig:
    """The model config a weights file describes itself with."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{path}: not a codec weights file (no '{FORMAT}' metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: weights format version {metadata.get('format_version')} is not supported")
    return from_dict(ModelConfig, json.loads(metadata["config"]), f"{path} config")


def load_weights(path: str | Path, for_training: bool = False) -> Codec:
    """A Codec from a weights file, in eval mode with weight norm folded in, unless `for_training`."""
    path = Path(path)
    codec = Codec.from_config(read_config(path))
    try:
        state = load_file(str(path))
        _check_finite(path, state)
        codec.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (SafetensorError, RuntimeError) as error:
        raise ModelError(f"{path}: weights do not match their config ({str(error).splitlines()[0]})") from None
    codec.weights_sha256, codec.tokenizer_sha256 = sha256(path), tokenizer_sha256(state)
    codec.weights_path = path
    return codec.train() if for_training else codec.fuse_weight_norm().eval()


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A diverged training's weights decode every sample to NaN, which a WAV writer turns into full-scale noise:
    name the first broken tensor instead."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            count = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"{path}: tensor '{key}' holds {count} NaN or infinite values of {tensor.numel()} "
                             f"(the training that made these weights diverged)")


def weights_path(name_or_path: str | Path) -> Path:
    """The file a model name stands for: "bundled" (the default model), "world" or "low-latency" (see `SHIPPED`),
    or a path."""
    if str(name_or_path) not in SHIPPED:
        return Path(name_or_path)
    path = SHIPPED[str(name_or_path)]
    if not path.is_file():
        raise ModelError(f"{name_or_path} weights missing at {path}")
    return path


def load(name_or_path: str | Path = "bundled") -> Codec:
    """`load("bundled")` (or "world", "low-latency") returns a model shipped with the package; any other value is a
    weights path."""
    path = weights_path(name_or_path)
    try:
        return load_weights(path)
    except CodecError:
        raise
    except Exception as error:  # anything else from a malformed file is still the file's fault
        raise ModelError(f"{name_or_path}: cannot load weights ({error})") from None
