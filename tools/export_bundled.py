"""Ship trained weights as the bundled model: `python tools/export_bundled.py runs/bundled/weights.safetensors`.

Writes codec/pretrained/bundled.safetensors in fp16 (config inside the metadata). The model card next to it is
edited by hand with the numbers `codec eval` measured.
"""
import argparse

import torch

from codec.weights import BUNDLED, load_weights, save_weights

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("weights")
    parser.add_argument("--steps", type=int, required=True, help="training steps, recorded in the metadata")
    args = parser.parse_args()
    codec = load_weights(args.weights, for_training=True)
    save_weights(codec, BUNDLED, dtype=torch.float16, extra={"training_steps": str(args.steps)})
    print(f"wrote {BUNDLED} ({BUNDLED.stat().st_size / 2**20:.1f} MiB)")
