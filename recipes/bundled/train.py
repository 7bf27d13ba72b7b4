"""Train the bundled model: `python recipes/bundled/train.py [key=value ...]` from the repository root.

Resumes from runs/bundled/checkpoints if present. Its weights land in runs/bundled/weights.safetensors.
"""
import sys
from pathlib import Path

from codec.config import load_yaml
from codec.train.config import TrainConfig
from codec.train.trainer import train

if __name__ == "__main__":
    config = load_yaml(TrainConfig, Path(__file__).with_name("config.yaml"), sys.argv[1:])
    train(config)
