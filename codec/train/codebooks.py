"""Codebooks fitted, not trained: for a model whose encoder and decoder learn nothing (`encoder: world`), the
residual codebooks are k-means centroids of the encoder's latents over the training audio, stage by stage.

Why not gradient steps: with a fixed encoder the quantizer's whole objective is the squared error of the
nearest code, which Lloyd's algorithm minimises directly, in minutes on this CPU (docs/world-codec.md); plain VQ
trained by gradients lets codes die, and SimVQ's codebook (a linear map of a fixed random basis) cannot follow
the latents' clusters (voiced and unvoiced frames, male and female f0).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from ..audio import load_audio
from ..config import ModelConfig
from ..errors import AudioError, ConfigError
from ..model import Codec
from ..quantize import PredictiveQuantizer
from ..weights import load_weights, save_weights
from .config import TrainConfig
from .data import read_file_list
from .refiner import fit_refiner
from .runs import find_run_checkpoint, run_weights

MAX_DECAY = 0.98  # a prediction's memory: a wrong frame fades to a tenth within about 110 frames (1.5 s)
ITERATIONS = 25  # Lloyd iterations per stage: the error changes by under 1 % over the last five (measured)
BATCH = 64       # files encoded together in the closed-loop pass
CHUNK = 65536    # latent vectors per distance computation: bounds memory at CHUNK x codebook_size floats


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> the index of each row's nearest centroid (N,)."""
    return torch.cat([torch.cdist(part, centroids).argmin(1) for part in x.split(CHUNK)])


def kmeans(x: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's algorithm from `count` distinct random rows; a centroid left without rows moves to a random row,
    so every code is used."""
    centroids = x[torch.randperm(len(x), generator=generator)[:count]].clone()
    for _ in range(ITERATIONS):
        assigned = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assigned, x)
        sizes = torch.bincount(assigned, minlength=count)
        empty = sizes == 0
        centroids = sums / sizes.clamp(min=1)[:, None]
        centroids[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=generator)]
    return centroids


_worker_codec: Codec | None = None


def _encode_file(model: ModelConfig, path: Path) -> torch.Tensor | str:
    """One file's latents (F, D), or the reason it was skipped; in a worker process, one model per process."""
    global _worker_codec
    if _worker_codec is None:
        torch.set_num_threads(1)
        _worker_codec = Codec.from_config(model)
    try:
        audio = load_audio(path, model.sample_rate)[0]
    except AudioError as error:
        return str(error)
    return _worker_codec.encoder(_worker_codec.pad_to_frames(audio[None, None]))[0].T


def training_latents(config: TrainConfig) -> list[torch.Tensor]:
    """Every training file's latents (F_i, D), encoded in `threads` processes (WORLD's analysis is single-threaded
    numpy)."""
    files = read_file_list(config.data.train, config.data.split)
    latents = []
    with ProcessPoolExecutor(config.threads) as pool:
        encoded = pool.map(partial(_encode_file, config.model), files, chunksize=4)
        for result in tqdm(encoded, total=len(files), desc="analysing", unit="file"):
            if isinstance(result, str):
                print(f"warning: skipped: {result}")
            else:
                latents.append(result)
    if not latents:
        raise ConfigError(f"data.train: no readable audio in {config.data.train}")
    return [x.float() for x in latents]


def fit_prediction(files: list[torch.Tensor], quantizer: PredictiveQuantizer) -> None:
    """Set the quantizer's mean and, per dimension, the decay that best predicts a frame from the one before
    (least squares; clamped to 0 .. MAX_DECAY, so that a wrong frame fades)."""
    mean = torch.cat(files).mean(0)
    before = torch.cat([x[:-1] for x in files]) - mean
    after = torch.cat([x[1:] for x in files]) - mean
    decay = (before * after).sum(0) / before.square().sum(0).clamp(min=1e-12)
    with torch.no_grad():
        quantizer.mean.copy_(mean)
        quantizer.decay.copy_(decay.clamp(0.0, MAX_DECAY))


def in_batches(files: list[torch.Tensor], run, desc: str) -> list[torch.Tensor]:
    """`run` (latents (B, D, F) -> (B, D, F)) over the files' latents (F_i, D), BATCH files at a time, sorted by
    length so that little zero-padding follows a file (a searching encoder weighs it in its last segment) -> each
    file's result (F_i, D)."""
    out: list[torch.Tensor | None] = [None] * len(files)
    order = sorted(range(len(files)), key=lambda i: len(files[i]))
    for start in tqdm(range(0, len(order), BATCH), desc=desc, unit="batch"):
        group = order[start:start + BATCH]
        batch = torch.nn.utils.rnn.pad_sequence([files[i] for i in group], batch_first=True).transpose(1, 2)
        with torch.no_grad():
            result = run(batch).transpose(1, 2)
        for i, row in zip(group, result):
            out[i] = row[:len(files[i])]
    return out


def decoded_latents(files: list[torch.Tensor], quantizer, count: int) -> list[torch.Tensor]:
    """Each file's latents coded at `count` codebooks as the encoder codes them (its search included), and
    decoded as the decoder decodes them (F_i, D): what a refiner at `count` corrects."""
    return in_batches(files, lambda batch: quantizer.dequantize(quantizer.encode(batch, count)).float(),
                      f"coding at {count} codebooks")


def prediction_errors(files: list[torch.Tensor], quantizer: PredictiveQuantizer, closed: bool) -> torch.Tensor:
    """What the stages see, (N, D): each frame less its prediction, from the previous frame's latents (open
    loop: before any codebook exists) or from its quantized latents (closed loop: as the encoder runs, on
    BATCH files at once, zero-padded at the end, which no earlier frame sees)."""
    before = [x[:-1] for x in files]
    if closed:  # the encoder's own reconstruction, as it predicts from it
        before = [x[:-1] for x in in_batches(files, lambda batch: quantizer(batch).quantized, "encoding")]
    start = quantizer.mean[None]
    return torch.cat([x - quantizer.predict(torch.cat([start, b])) for x, b in zip(files, before)])


def fit_stages(x: torch.Tensor, stages, generator: torch.Generator) -> None:
    """Each stage's codebook: k-means of what the stages before it leave of x (N, D)."""
    residual = x
    for index, stage in enumerate(tqdm(stages, desc="fitting codebooks", unit="stage")):
        centroids = kmeans(residual, stage.codebook_size, generator)
        residual = residual - centroids[nearest(residual, centroids)]
        with torch.no_grad():
            stage.codebook.copy_(centroids)
            stage.scale.fill_(1.0)
            stage.initialized.fill_(True)
        print(f"codebook {index + 1}: residual RMS {residual.square().mean().sqrt():.4f} "
              f"(of {x.square().mean().sqrt():.4f}), {len(x)} frames")


def fit_quantizer(files: list[torch.Tensor], quantizer, generator: torch.Generator) -> None:
    """Fit the codebooks (and a predictive quantizer's prediction) to the training latents (F_i, D)."""
    if isinstance(quantizer, PredictiveQuantizer):
        # The stages are first fitted to what the prediction from unquantized frames misses, then refitted to
        # what it misses as the encoder runs: from quantized frames, whose errors the stages then learn to undo.
        fit_prediction(files, quantizer)
        fit_stages(prediction_errors(files, quantizer, closed=False), quantizer.stages, generator)
        fit_stages(prediction_errors(files, quantizer, closed=True), quantizer.stages, generator)
    else:
        fit_stages(torch.cat(files), quantizer.stages, generator)


def fit_codebooks(config: TrainConfig, init_weights: str | None = None) -> Path:
    """Fit the model's residual codebooks to the training audio, then its refiner if it has one; write
    out_dir/weights.safetensors. From `init_weights` (a weights file or a run) with `freeze: [quantizer]`, the
    codebooks are those weights' and only the refiner is fitted: the codes keep their meaning."""
    model = config.model
    if model.quantizer.kind != "vq" or model.quantizer.code_dim:
        raise ConfigError("fitted codebooks need quantizer.kind: vq without code_dim (k-means sets each code "
                          "itself; SimVQ's codes are a map of a fixed basis)")
    if "quantizer" in config.freeze and not init_weights:
        raise ConfigError("freeze: [quantizer] keeps fitted codebooks: give them with --init-weights")
    torch.set_num_threads(config.threads)
    codec = Codec.from_config(model)
    if init_weights:
        source = Path(init_weights)
        previous = load_weights(run_weights(find_run_checkpoint(source)) if source.is_dir() else source,
                                for_training=True)
        codec.quantizer.load_state_dict(previous.quantizer.state_dict())  # prepare() checked the shapes
    files = training_latents(config)
    frames = sum(len(x) for x in files)
    if frames < model.quantizer.codebook_size:
        raise ConfigError(f"data.train: {frames} frames, fewer than the {model.quantizer.codebook_size} codes "
                          f"of a codebook: give more audio or a smaller quantizer.codebook_size")
    generator = torch.Generator().manual_seed(config.seed)
    if "quantizer" not in config.freeze:  # frozen: the codebooks of `init_weights`
        fit_quantizer(files, codec.quantizer, generator)
    if codec.refiner is not None:  # what the fitted codes lose, learned from the codes the encoder chooses
        decoded = {count: decoded_latents(files, codec.quantizer, count) for count in codec.refiner.codebooks}
        fit_refiner(files, decoded, codec.refiner, generator)
    out = Path(config.out_dir) / "weights.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(codec, out)
    return out
