"""A run folder (`out_dir`): what `codec train` may start or continue there, and the weights file
`codec export-weights` makes from one of its checkpoints.

The trainer itself always continues from `out_dir/checkpoints` when it finds a checkpoint there (so a job
restarted by a scheduler picks up where it stopped). The command line is stricter, so that a user never mixes
two runs by reusing a folder: a folder holding an earlier run is refused unless `--resume` (continue it) or
`--force` (delete it and start over).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..audio import check_folder
from ..config import ModelConfig, to_dict
from ..errors import ConfigError, ModelError, OutputError
from ..model import Codec
from ..weights import read_config, save_weights
from .checkpoint import checkpoint_step, latest_checkpoint
from .config import TrainConfig

# What the trainer writes into out_dir; --force deletes exactly these and nothing else the user put there.
RUN_OUTPUTS = ("checkpoints", "logs", "weights.safetensors")


def prepare(config: TrainConfig, resume: bool = False, force: bool = False, init_weights: str | None = None) -> None:
    """Check a training command before anything is deleted or trained, then clear the folder if `force`.

    Safe under `accelerate launch`: each process clears the folder itself before the trainer looks for a
    checkpoint, and the trainer writes nothing before every process has joined the model's DDP wrapping."""
    if resume and force:
        raise ConfigError("--resume continues the run in out_dir and --force deletes it: give one")
    if init_weights and resume:
        raise ConfigError("--init-weights starts a new run from weights or another run; --resume continues the "
                          "run in out_dir: give one")
    if init_weights:  # the decoder and the refiner may differ: a new one then starts fresh (see Trainer)
        source = Path(init_weights)
        weights = run_weights(find_run_checkpoint(source)) if source.is_dir() else source
        _check_same_model(config.model, weights, "--init-weights", free=("name", "decoder", "istft", "harmonic",
                                                                               "refiner"))
    _check_data(config)
    out = Path(config.out_dir)
    check_folder(out, "out_dir")  # before the data is read and the model built, not at the first checkpoint
    checkpoint = latest_checkpoint(out / "checkpoints")
    if resume:
        if checkpoint is None:
            raise ConfigError(f"--resume: no checkpoint to continue from in {out / 'checkpoints'}")
        if (out / "weights.safetensors").is_file():  # absent if killed between first checkpoint and weights
            _check_same_model(config.model, out / "weights.safetensors", "--resume")
        return
    previous = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if previous and not force:
        where = f" (last checkpoint {checkpoint.name})" if checkpoint else ""
        raise OutputError(f"{out} holds an earlier run{where}: --resume continues it, --force deletes it and "
                          f"starts over, or set another out_dir")
    for path in previous:  # another process of the same launch may have deleted it already
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_data(config: TrainConfig) -> None:
    if not config.data.train:
        raise ConfigError("data.train is not set: give a folder or manifest of training audio (data.train=PATH)")
    for key, source in (("data.train", config.data.train), ("data.valid", config.data.valid)):
        if source and not Path(source).exists():
            raise ConfigError(f"{key}: {source}: no such folder or manifest")


def _check_same_model(model: ModelConfig, weights: Path, option: str, free: tuple[str, ...] = ("name",)) -> None:
    """Weights only load into the model they were saved from: name the setting that differs, not a shape.
    The name is a label, free to change; so are the other top-level settings in `free`."""
    before, now = _flatten(to_dict(read_config(weights))), _flatten(to_dict(model))
    changed = [key for key in sorted(before.keys() | now.keys())
               if key.split(".")[0] not in free and before.get(key) != now.get(key)]
    if changed:
        key = changed[0]
        raise ConfigError(f"{option}: {weights} has model.{key} = {before.get(key)!r}, the config says "
                          f"{now.get(key)!r}; the model settings must match")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def find_run_checkpoint(source: str | Path) -> Path:
    """A checkpoint folder as given, or the latest checkpoint of a run folder."""
    source = Path(source)
    if (source / "trainer.json").is_file():
        return source
    if not source.is_dir():
        raise ModelError(f"{source}: no such run folder or checkpoint")
    checkpoint = latest_checkpoint(source / "checkpoints")
    if checkpoint is None:
        raise ModelError(f"{source}: neither a checkpoint nor a run folder with one in checkpoints/")
    return checkpoint


def run_weights(checkpoint: Path) -> Path:
    """The weights file of the run a checkpoint belongs to: it holds the run's model config."""
    return checkpoint.parent.parent / "weights.safetensors"


def checkpoint_codec(source: str | Path, raw: bool = False,
                     model: ModelConfig | None = None) -> tuple[Codec, int]:
    """The generator of a checkpoint (or of a run's latest): its EMA, or its raw weights if `raw`. The model
    config comes from `model`, else from the run's weights.safetensors. Returns (codec, step)."""
    checkpoint = find_run_checkpoint(source)
    if model is None:
        weights = run_weights(checkpoint)
        if not weights.is_file():
            raise ModelError(f"{checkpoint}: its model config is read from {weights}, which is missing; give the "
                             f"training config (--config)")
        model = read_config(weights)
    file = checkpoint / ("codec.safetensors" if raw else "ema.safetensors")
    if not file.is_file():
        raise ModelError(f"{checkpoint}: no EMA weights (the run had ema_decay: 0): export the raw ones with --raw")
    state = load_file(str(file))
    if not raw:  # the EMA module holds its copy of the generator as `model`, beside its update count
        state = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    codec = Codec.from_config(model)
    try:
        codec.load_state_dict(state)
    except RuntimeError as error:
        raise ModelError(f"{file}: does not match the model config ({str(error).splitlines()[0]})") from None
    return codec, checkpoint_step(checkpoint)


def export_weights(source: str | Path, out: str | Path, raw: bool = False, force: bool = False,
                   dtype: torch.dtype = torch.float32, model: ModelConfig | None = None) -> tuple[Path, int]:
    """Write an inference weights file from a checkpoint (see `checkpoint_codec`). Returns (path, step)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise OutputError(f"{out}: weights are written as safetensors: name the file *.safetensors")
    if out.exists() and not force:
        raise OutputError(f"{out}: already exists (use --force to overwrite)")
    codec, step = checkpoint_codec(source, raw, model)
    save_weights(codec, out, dtype, extra={"training_steps": str(step), "weights": "raw" if raw else "ema"},
                 force=force)
    return out, step
