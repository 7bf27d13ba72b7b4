"""Ship a training checkpoint as the bundled model:

    python tools/export_bundled.py runs/bundled/checkpoints/step-00001100 recipes/bundled/config.yaml

`codec export-weights --raw` written to codec/pretrained/bundled.safetensors in fp16, which halves the wheel.
It takes the checkpoint's raw generator weights, not the EMA: over a run of about a thousand steps an EMA with
decay 0.999 still carries much of the early, untrained weights.
"""
import argparse
from pathlib import Path

import torch

from codec.config import load_yaml
from codec.train.config import TrainConfig
from codec.train.runs import export_weights
from codec.weights import BUNDLED

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    model = load_yaml(TrainConfig, args.config).model
    path, step = export_weights(args.checkpoint, BUNDLED, raw=True, force=True, dtype=torch.float16, model=model)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) from step {step}")
