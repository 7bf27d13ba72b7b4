"""Harmonic against inverse-STFT decoder at equal steps: a fresh small decoder of each kind on the bundled
model's frozen encoder and quantizer, from the same initial backbone weights and the same batches, then both
scored on a few `eval` files (PESQ-WB, STOI, and for the harmonic one its f0 and voicing against pyworld).

    python tools/harmonic_experiment.py train --decoder harmonic --steps 300   # and --decoder istft
    python tools/harmonic_experiment.py score runs/harmonic-exp-istft runs/harmonic-exp-harmonic --files 8
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from codec.audio import load_audio
from codec.config import HarmonicDecoderConfig, ISTFTDecoderConfig
from codec.corpus import read_utterances
from codec.metrics.quality import align, pesq_wideband, stoi
from codec.train.checkpoint import latest_checkpoint
from codec.train.config import DataConfig, LossConfig, TrainConfig
from codec.train.pitch import pitch_errors, pitch_labels
from codec.train.runs import export_weights
from codec.train.trainer import train
from codec.weights import load_weights, weights_path

MANIFEST = Path(__file__).parents[1].parent / "shared" / "data" / "MANIFEST.tsv"
SIZE = dict(dim=192, hidden_dim=576, num_layers=4, n_fft=640)


def run(decoder: str, steps: int, threads: int) -> None:
    model = load_weights(weights_path("low-latency"), for_training=True).config
    model.decoder, model.istft, model.harmonic = decoder, ISTFTDecoderConfig(**SIZE), HarmonicDecoderConfig(**SIZE)
    out = Path(f"runs/harmonic-exp-{decoder}")
    config = TrainConfig(model=model, data=DataConfig(train=str(MANIFEST), split="train", crop_seconds=1.0,
                                                     batch_size=4),
                         loss=LossConfig(mel=1.0, stft=1.0, quantizer=0.067, f0=1.0, voicing=1.0),
                         freeze=["encoder", "quantizer"], steps=steps, learning_rate=5e-4, warmup_steps=20,
                         codebook_refit_until=0, checkpoint_every=50, valid_every=10 ** 9, log_every=10,
                         seed=1, threads=threads, out_dir=str(out))
    # The decoders are smaller than the bundled one, so warm start takes the encoder and quantizer only, and
    # both backbones start from the same seed.
    train(config, str(weights_path("low-latency")))


def score(folder: Path, files: int, step: int | None) -> dict[str, float]:
    checkpoint = (folder / "checkpoints" / f"step-{step:08d}") if step else latest_checkpoint(folder / "checkpoints")
    weights = folder / "raw.safetensors"
    export_weights(checkpoint, weights, raw=True, force=True)
    codec = load_weights(weights)
    utterances = read_utterances(MANIFEST, "eval")[::max(1, 102 // files)][:files]
    rows = []
    for utterance in utterances:
        audio, rate, _ = load_audio(utterance.path, codec.sample_rate)
        decoded = codec.decode(codec.encode(audio[None]), audio.shape[-1])[0]
        pair = align(audio, codec.sample_rate, decoded, codec.sample_rate)
        row = {"pesq": pesq_wideband(pair), "stoi": stoi(pair)}
        if codec.config.decoder == "harmonic":
            frames = -(-audio.shape[-1] // codec.hop_length)
            labels = pitch_labels(audio[None], codec.sample_rate, codec.hop_length, frames)
            row.update(pitch_errors(codec.decoder.pitch_prediction, labels))
        rows.append(row)
    return {"step": int(checkpoint.name.split("-")[-1]), **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--decoder", choices=["istft", "harmonic"], required=True)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("score")
    s.add_argument("runs", nargs="+", type=Path)
    s.add_argument("--files", type=int, default=8)
    s.add_argument("--step", type=int, help="score this checkpoint (default: the latest)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "train":
        run(args.decoder, args.steps, args.threads)
    else:
        for folder in args.runs:
            print(folder, score(folder, args.files, args.step))
