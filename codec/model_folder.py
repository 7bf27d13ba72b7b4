"""A model as a folder, in the layout Hugging Face users expect: `model.safetensors` (the weights file, config in
its metadata as everywhere in codec), a readable `config.json` and a model card `README.md`.

`Codec.save_pretrained(folder)` writes one; `Codec.from_pretrained(folder_or_file)` reads one (or any weights
file, or a shipped model's name: "bundled", "world", "low-latency"). Nothing is downloaded: anything else that
is not a folder or a file is an error.
A model loaded for inference (weight norm folded) is saved as the very file it was loaded from, so its sha256,
and with it every `.codes` file made with it, still matches.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .audio import AtomicOutput
from .config import to_dict
from .errors import ModelError, OutputError
from .model import Codec
from .weights import BUNDLED, SHIPPED, load, save_weights

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"


def save_pretrained(codec: Codec, folder: str | Path, force: bool = False) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: a model folder is a folder, and this is a file")
    if (folder / WEIGHTS).exists() and not force:
        raise OutputError(f"{folder / WEIGHTS}: exists (force=True to overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    source = getattr(codec, "weights_path", None)
    folded = any(k.endswith(".conv.weight") for k in codec.state_dict())
    if folded and source is None:
        raise ModelError("this model was built for inference without a weights file; save it from the "
                         "training form (load_weights(..., for_training=True))")
    if folded or (source is not None and _holds(codec, source)):
        with AtomicOutput(folder / WEIGHTS, force=True) as temporary:
            shutil.copyfile(source, temporary)
    else:
        save_weights(codec, folder / WEIGHTS)
    config = {"format": "codec", "model_type": "codec", **to_dict(codec.config),
              "frame_rate": codec.frame_rate, "hop_length": codec.hop_length, "bitrate": codec.bitrate}
    with AtomicOutput(folder / CONFIG, force=True) as temporary:
        temporary.write_text(json.dumps(config, indent=2) + "\n")
    shipped_card = BUNDLED.parent / "README.md"  # the model card of every shipped model
    with AtomicOutput(folder / CARD, force=True) as temporary:
        if source is not None and Path(source) in SHIPPED.values() and shipped_card.is_file():
            shutil.copyfile(shipped_card, temporary)
        else:
            temporary.write_text(_card(codec))
    return folder


def _holds(codec: Codec, path: Path) -> bool:
    """Whether the weights file still holds the model's every tensor (a model without weight norm, such as the
    bundled one, loads unfolded): then the file itself is saved, and its .codes files still match."""
    from safetensors.torch import load_file
    saved, state = load_file(str(path)), codec.state_dict()
    return saved.keys() == state.keys() and all(torch.equal(saved[k].to(state[k].dtype), state[k].cpu()) for k in saved)


def _card(codec: Codec) -> str:
    config = codec.config
    lookahead = codec.encoder_lookahead + codec.decoder_lookahead
    streams = f"streaming, with {lookahead} frames of look-ahead" if lookahead else "causal, streaming"
    return (f"# {codec.name}\n\nA model of the `codec` toolkit: {type(codec.encoder).__name__} ({config.encoder}, "
            f"hop {codec.hop_length}), residual {config.quantizer.kind} quantizer of {codec.num_codebooks} codebooks "
            f"x {codec.codebook_size} codes, {type(codec.decoder).__name__} ({config.decoder}); {streams}."
            f"\n\n"
            f"| | |\n|---|---|\n| Sample rate | {codec.sample_rate} Hz |\n| Frame rate | {codec.frame_rate:g} Hz |\n"
            f"| Bitrate | {codec.bitrate / 1000:g} kbps with every codebook |\n"
            f"| Weights sha256 | {codec.weights_sha256 or 'saved from training'} |\n\n"
            f"```python\nfrom codec import Codec\nmodel = Codec.from_pretrained(\"path/to/this/folder\")\n```\n")


def from_pretrained(path: str | Path) -> Codec:
    path = Path(path)
    if str(path) not in SHIPPED and not path.exists():
        raise ModelError(f"{path}: no such model folder or weights file (nothing is downloaded)")
    if not path.is_dir():
        return load(path)
    if not (path / WEIGHTS).is_file():
        raise ModelError(f"{path}: a model folder holds {WEIGHTS}, and this one does not")
    codec = load(path / WEIGHTS)
    if (path / CONFIG).is_file():
        try:
            written = json.loads((path / CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{path / CONFIG}: not JSON ({error})") from None
        expected = to_dict(codec.config)
        differing = [k for k in expected if k in written and written[k] != expected[k]]
        if differing:
            raise ModelError(f"{path / CONFIG}: '{differing[0]}' differs from the config inside {WEIGHTS}, "
                             f"which is the one the weights were made with")
    return codec
