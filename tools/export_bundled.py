"""Ship a training checkpoint as the bundled model:

    python tools/export_bundled.py runs/bundled/checkpoints/step-00001100 recipes/bundled/config.yaml

Writes codec/pretrained/bundled.safetensors in fp16 with the config in its metadata. It takes the checkpoint's
raw generator weights, not the EMA: over a run of about a thousand steps an EMA with decay 0.999 still carries
much of the early, untrained weights.
"""
import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.config import load_yaml
from codec.model import Codec
from codec.train.config import TrainConfig
from codec.weights import BUNDLED, save_weights

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    config = load_yaml(TrainConfig, args.config)
    codec = Codec(config.model)
    codec.load_state_dict(load_file(str(args.checkpoint / "codec.safetensors")))
    step = int(args.checkpoint.name.split("-")[-1])
    save_weights(codec, BUNDLED, dtype=torch.float16, extra={"training_steps": str(step)})
    print(f"wrote {BUNDLED} ({BUNDLED.stat().st_size / 2**20:.1f} MiB) from step {step}")
