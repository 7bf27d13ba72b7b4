"""Resumable checkpoints in safetensors: model, optimizer, scheduler position, RNG state.

Each checkpoint is a folder written under a temporary name and renamed when complete; the file `latest` names
the newest complete one and is replaced atomically. A process killed at any moment, even mid-save, leaves the
previous checkpoint intact and `latest` pointing at it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], str]:
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).contiguous()
    return tensors, json.dumps(state["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: str) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json.loads(groups)}


def save_checkpoint(folder: str | Path, step: int, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict | None = None, keep: int = 2) -> Path:
    """Write checkpoint `step` (modules, optimizers, RNG, and `state`: the trainer's counters, JSON) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    temporary = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name, module in modules.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(temporary / f"{name}.safetensors"))
    for name, optimizer in optimizers.items():
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(temporary / f"{name}.optimizer.safetensors"), metadata={"param_groups": groups})
    # The batches and the codebook counts are seeded by the step and need none of this; anything else random
    # (a layer a user adds, a GPU kernel's own draws) resumes from the generators' saved states.
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    save_file(rng, str(temporary / "rng.safetensors"))
    (temporary / "trainer.json").write_text(json.dumps({**(state or {}), "step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    pointer = folder / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / "latest")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / "trainer.json").is_file() else None


def checkpoint_state(path: Path) -> dict:
    """The trainer's counters saved with a checkpoint: its step, and what the trainer passed as `state`."""
    return json.loads((path / "trainer.json").read_text())


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint folder was saved at."""
    return checkpoint_state(path)["step"]


def restore_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, list[str]]:
    """Restore what the checkpoint holds; returns (step, names restored). Modules it lacks (say, discriminators
    added to a run that had none) keep their fresh state, so a run can grow from an earlier one."""
    from safetensors import safe_open
    loaded = []
    for name, module in modules.items():
        if (path / f"{name}.safetensors").is_file():
            module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
            loaded.append(name)
    for name, optimizer in optimizers.items():
        file = path / f"{name}.optimizer.safetensors"
        if file.is_file():
            with safe_open(str(file), "pt") as handle:
                groups = handle.metadata()["param_groups"]
            optimizer.load_state_dict(_unflatten_optimizer(load_file(str(file)), groups))
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(rng["cuda"]))
    return checkpoint_step(path), loaded
