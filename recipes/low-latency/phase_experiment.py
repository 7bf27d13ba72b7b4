"""Absolute against integrated phase in the inverse-STFT head (README.md, "After stage 5"): a fresh decoder of
each kind on the low-latency model's frozen encoder and quantizer, 800 steps of reconstruction losses each (~10 min
each on 2 cores), from the same initial weights and batches. Run from the repository root:

    python recipes/low-latency/phase_experiment.py --data ../shared/data/MANIFEST.tsv     # its `train` split
    python tools/diagnose_model.py --model runs/phase-absolute/raw.safetensors     # and runs/phase-integrated/
    codec eval --model runs/phase-absolute/raw.safetensors --data ../shared/data/MANIFEST.tsv --split train \
        --subset 12 --out results/phase-absolute                                    # DistillMOS
"""
import argparse
from pathlib import Path

import torch

from codec.config import load_yaml
from codec.model import Codec
from codec.train.checkpoint import latest_checkpoint
from codec.train.config import TrainConfig
from codec.train.runs import export_weights, prepare
from codec.train.trainer import train
from codec.weights import load_weights, save_weights, weights_path

HERE = Path(__file__).parent


def fresh_decoder(out: Path) -> Path:
    """The low-latency encoder and quantizer with a newly initialised decoder (seed 1)."""
    bundled = load_weights(weights_path("low-latency"), for_training=True)
    torch.manual_seed(1)
    codec = Codec.from_config(bundled.config)
    codec.encoder.load_state_dict(bundled.encoder.state_dict())
    codec.quantizer.load_state_dict(bundled.quantizer.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(codec, out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="manifest whose `train` rows the decoders train on")
    data = parser.parse_args().data
    init = fresh_decoder(Path("runs/phase-init.safetensors"))
    for phase in ("absolute", "integrated"):
        config = load_yaml(TrainConfig, HERE / "stage5.yaml", [
            f"data.train={data}", "discriminator=null", "loss={mel: 1.0, stft: 1.0, quantizer: 0.067}", "steps=800",
            "learning_rate=0.0005", "checkpoint_every=800", f"model.istft.phase={phase}",
            f"out_dir=runs/phase-{phase}"])
        prepare(config, force=True, init_weights=str(init))
        train(config, str(init))
        export_weights(latest_checkpoint(Path(config.out_dir) / "checkpoints"),
                       Path(config.out_dir) / "raw.safetensors", raw=True, force=True, model=config.model)
