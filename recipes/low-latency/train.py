"""Train the low-latency model from nothing, in its six stages, from the repository root (README.md says why):

    python recipes/low-latency/train.py --data MANIFEST.tsv     # its rows of split `train`; a folder: --split none

A stage that was interrupted resumes from its last checkpoint; a finished one is skipped. Stage 7 (the harmonic
decoder; stages 6 and 8 are experiments outside this chain) scores its learning curve on the manifest's `eval` rows.
The final weights land in runs/bundled-stage7/weights.safetensors (EMA) and runs/bundled-stage7/checkpoints;
`python tools/export_checkpoint.py runs/bundled-stage7/checkpoints/step-NNNNNNNN recipes/low-latency/stage7.yaml` ships
them.
"""
import argparse
from pathlib import Path

from codec.config import load_yaml
from codec.weights import load_weights, save_weights
from codec.train.checkpoint import checkpoint_step, latest_checkpoint
from codec.train.config import TrainConfig
from codec.train.runs import export_weights
from codec.train.trainer import train
from to_harmonic import to_harmonic
from unfactorize import unfactorize

HERE = Path(__file__).parent


def stage(config_name: str, data: list[str], init_weights: Path | None = None) -> tuple[TrainConfig, Path]:
    """Run (or resume, or skip) one stage on `data` (overrides of the data section); returns its config and final
    checkpoint."""
    config = load_yaml(TrainConfig, HERE / config_name, data)
    checkpoint = latest_checkpoint(Path(config.out_dir) / "checkpoints")
    if checkpoint is None or checkpoint_step(checkpoint) < config.steps:
        train(config, None if checkpoint else str(init_weights) if init_weights else None)
    return config, latest_checkpoint(Path(config.out_dir) / "checkpoints")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder or manifest of training audio")
    parser.add_argument("--split", default="train", help="manifest rows to train on (default train; none: all)")
    args = parser.parse_args()
    data = [f"data.train={args.data}", f"data.split={'null' if args.split == 'none' else args.split}"]
    # 1: SEANet encoder and decoder, factorized SimVQ codes.
    config, checkpoint = stage("stage1.yaml", data)
    first = Path(config.out_dir) / "raw.safetensors"
    export_weights(checkpoint, first, raw=True, force=True, model=config.model)
    # 2: a new inverse-STFT decoder on stage 1's encoder and quantizer.
    config, checkpoint = stage("stage2.yaml", data, first)
    # 3: the same codes as low-rank SimVQ stages searched by distance, trained on.
    second = unfactorize(checkpoint, config.model, Path(config.out_dir) / "unfactorized.safetensors")
    config, _ = stage("stage3.yaml", data, second)
    # 4: discriminators join, on stage 3's EMA generator.
    config, _ = stage("stage4.yaml", data, Path(config.out_dir) / "weights.safetensors")
    # 5: the decoder alone, from stage 4's EMA generator with fresh discriminators; the codes stay stage 4's.
    config, _ = stage("stage5.yaml", data, Path(config.out_dir) / "weights.safetensors")
    # 7: stage 5's decoder turned into a harmonic one and trained alone; the codes still stay stage 4's.
    start = Path(config.out_dir) / "harmonic.safetensors"
    save_weights(to_harmonic(load_weights(Path(config.out_dir) / "weights.safetensors", for_training=True)), start)
    stage("stage7.yaml", data + [f"data.valid={args.data}"], start)
