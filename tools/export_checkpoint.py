"""Ship a training checkpoint as the low-latency model:

    python tools/export_checkpoint.py runs/bundled-stage7/checkpoints/step-00005000 \
        recipes/low-latency/stage7.yaml [--raw]

`codec export-weights` written to codec/pretrained/low-latency.safetensors in fp16, which halves the wheel. The EMA
of the generator by default; `--raw` takes the raw weights instead (over a run of about a thousand steps, an EMA
with decay 0.999 still carries much of the initial weights).
"""
import argparse
from pathlib import Path

import torch

from codec.config import load_yaml
from codec.train.config import TrainConfig
from codec.train.runs import export_weights
from codec.weights import LOW_LATENCY

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("config", type=Path)
    parser.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    args = parser.parse_args()
    model = load_yaml(TrainConfig, args.config).model
    path, step = export_weights(args.checkpoint, LOW_LATENCY, raw=args.raw, force=True, dtype=torch.float16,
                                model=model)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) from step {step}")
