"""Turn a model with factorized SimVQ stages into one with plain SimVQ stages of a low-rank basis, same codes.

    python recipes/low-latency/unfactorize.py runs/bundled-stage2/checkpoints/step-00001750 \
        recipes/low-latency/stage2.yaml OUT.safetensors       (recipes/low-latency/train.py calls it between stages)

A factorized stage (`code_dim` = r) maps latents into r dimensions, searches its SimVQ codes C W^T + b there by
angle, and maps the chosen code back with project_out. Its codes in the latent space are project_out(C W^T + b):
a SimVQ whose frozen basis is the same r-dimensional C and whose learned map is project_out composed with W. This
writes that SimVQ (`basis_dim` = r, no `code_dim`), which searches the latent space itself by distance.

Why: searched by angle in r dimensions, a stage's code did not approximate its residual: on the step-750
checkpoint the latents' relative residual energy was 1.13 after one stage and 2.73 after eight (each stage added
error, so later codebooks carried little), against 0.09 after eight when the same codes are searched by distance
in the latent space and trained there for 300 steps (`recipes/low-latency/README.md`).
"""
import argparse
import dataclasses
from pathlib import Path

import torch

from codec.config import ModelConfig, load_yaml
from codec.model import Codec
from codec.train.config import TrainConfig
from codec.train.runs import checkpoint_codec
from codec.weights import save_weights


def unfactorize(checkpoint: Path, model: ModelConfig, out: Path) -> Path:
    """Write the raw weights of a factorized `checkpoint` (of `model`) as the equivalent low-rank SimVQ model."""
    factorized, _ = checkpoint_codec(checkpoint, raw=True, model=model)
    rank = model.quantizer.code_dim
    plain = Codec.from_config(dataclasses.replace(model, quantizer=dataclasses.replace(model.quantizer, code_dim=None,
                                                                           basis_dim=rank)))
    plain.encoder.load_state_dict(factorized.encoder.state_dict())
    plain.decoder.load_state_dict(factorized.decoder.state_dict())
    with torch.no_grad():
        for old, new in zip(factorized.quantizer.stages, plain.quantizer.stages):
            new.basis.copy_(old.inner.basis)  # same seed; copied for the rounding of weights shipped in fp16
            out_map, inner = old.project_out, old.inner
            new.projection.weight.copy_(out_map.weight @ inner.projection.weight * inner.scale)
            new.projection.bias.copy_(out_map.weight @ inner.projection.bias * inner.scale + out_map.bias)
            new.scale.fill_(1.0)
            new.initialized.fill_(True)
            ids = torch.arange(new.codebook_size)
            assert torch.allclose(new.vectors(ids), old.vectors(ids), atol=1e-4), "same codes in the latent space"
    save_weights(plain, out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="checkpoint of the factorized run")
    parser.add_argument("config", type=Path, help="training YAML of the factorized run")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"wrote {unfactorize(args.checkpoint, load_yaml(TrainConfig, args.config).model, args.out)}")
