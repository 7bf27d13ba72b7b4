"""Codec: an encoder, a residual quantizer, an optional latent refiner and a decoder composed from configuration;
offline or chunk by chunk."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .nn import DECODERS, ENCODERS
from .nn.refiner import LatentRefiner
from .quantize import ResidualQuantizer, build_quantizer
from .streams import StreamingDecoder, StreamingEncoder, decode_streams, encode_streams

MAX_CHANNELS = 16  # a (T, C) array with at most this many columns is taken for multi-channel audio, not a batch
# Clips of different lengths encode in calls of at most this many padded samples (or one clip, if longer). The
# encoder's first layers hold 32-64 channels at the audio rate: on a CPU, larger calls run slower per sample, as
# their activations leave the cache (measured, bundled model, 2 threads, 32 clips of 1-8 s against one by one:
# 1.06-1.07x at 100,000-150,000 samples, 0.98-1.18x at 200,000, 0.80x at 400,000); a GPU wants large calls,
# bounded near 2 GB of activations.
BATCH_SAMPLES = {"cpu": 150_000, "other": 4_000_000}


@dataclass
class CodecOutput:
    audio: torch.Tensor   # (B, 1, T) reconstruction, same length as the input
    codes: torch.Tensor   # (B, Q, F)
    loss: torch.Tensor    # quantizer loss (codebook + beta * commitment)


class Codec(nn.Module):
    """A neural audio codec: an encoder (audio (B, 1, T) -> latents (B, D, F)), a residual quantizer (latents ->
    codes (B, Q, F) and back), optionally a refiner (decoded latents -> what quantization lost, added back) and a
    decoder (latents -> audio). `encode` turns mono audio into integer codes; `decode` turns them back.
    `from_config` builds the parts a `ModelConfig` names."""

    def __init__(self, encoder: nn.Module, quantizer: ResidualQuantizer, decoder: nn.Module,
                 config: ModelConfig, refiner: LatentRefiner | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.refiner = refiner
        # Set when loaded from a file; codes files record both (see tokenizer_sha256).
        self.weights_sha256: str | None = None
        self.tokenizer_sha256: str | None = None
        self.weights_path = None  # the file it was loaded from (save_pretrained copies it)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "Codec":
        """A freshly initialised model of this configuration (the encoder and decoder from `codec.nn`'s tables,
        the quantizer from `codec.quantize`'s, a refiner if `refiner.codebooks` names any)."""
        r = config.refiner
        refiner = LatentRefiner(config.latent_dim, r.codebooks, r.context_frames, r.hidden_dim, r.lookahead_frames) \
            if r.codebooks else None
        return cls(ENCODERS[config.encoder](config), build_quantizer(config.latent_dim, config.quantizer),
                   DECODERS[config.decoder](config), config, refiner)

    @classmethod
    def from_pretrained(cls, path_or_folder) -> "Codec":
        """A model folder (model.safetensors, config.json, README.md), a weights file or "bundled"; nothing is
        downloaded. For inference (weight norm folded), as `codec.load`."""
        from .model_folder import from_pretrained
        return from_pretrained(path_or_folder)

    def save_pretrained(self, folder, force: bool = False):
        """Write model.safetensors, a readable config.json and a model card README.md into `folder`."""
        from .model_folder import save_pretrained
        return save_pretrained(self, folder, force)

    # --- what a user asks about ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def encoder_lookahead(self) -> int:
        """Frames of audio after a frame that its codes wait for (WORLD's block analysis; 0 for causal encoders)."""
        return getattr(self.encoder, "lookahead_frames", 0)

    @property
    def decoder_lookahead(self) -> int:
        """Frames a stream decoder's audio lags its codes (the refiner reads frames ahead); `flush` returns them."""
        return self.refiner.lookahead_frames if self.refiner is not None else 0

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_sizes[0]

    @property
    def codebook_sizes(self) -> list[int]:
        return self.quantizer.codebook_sizes

    @property
    def bitrate(self) -> float:
        """Nominal bits per second with every codebook."""
        return self.bitrate_for(self.num_codebooks)

    def bitrate_for(self, num_codebooks: int) -> float:
        return self.frame_rate * sum(math.log2(k) for k in self.codebook_sizes[:num_codebooks])

    def codebooks_for_bandwidth(self, kbps: float) -> int:
        """The most codebooks whose nominal bitrate fits in `kbps`.

        A target above the model's highest bitrate is refused rather than met with every codebook: 6000 for 6
        (bits for kilobits) is the likely slip, and it would pass silently."""
        choices = ", ".join(f"{self.bitrate_for(n) / 1000:g}" for n in range(1, self.num_codebooks + 1))
        if not (math.isfinite(kbps) and kbps > 0):
            raise ValueError(f"bandwidth must be a positive number of kbps, got {kbps}")
        if kbps * 1000 > self.bitrate + 1e-6:
            raise ValueError(f"bandwidth {kbps:g} kbps is above this model's highest, {self.bitrate / 1000:g} kbps "
                             f"(choices: {choices})")
        fitting = [n for n in range(1, self.num_codebooks + 1) if self.bitrate_for(n) <= kbps * 1000 + 1e-6]
        if not fitting:
            raise ValueError(f"bandwidth {kbps:g} kbps is below this model's lowest, "
                             f"{self.bitrate_for(1) / 1000:g} kbps (choices: {choices})")
        return fitting[-1]

    # --- the forward pass used by training ---------------------------------------------------------------
    def forward(self, audio: torch.Tensor, num_codebooks: int | None = None) -> CodecOutput:
        length = audio.shape[-1]
        latents = self.encoder(self.pad_to_frames(audio))
        quantized = self.quantizer(latents, num_codebooks)
        decoded = self.refine(quantized.quantized, quantized.codes)
        return CodecOutput(self.decoder(decoded)[..., :length], quantized.codes, quantized.loss)

    def refine(self, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The decoded latents (B, D, F) of codes (B, n, F), refined if the model has a refiner (each frame by its
        number of codebooks not dropped)."""
        return latents if self.refiner is None else self.refiner(latents, (codes >= 0).sum(1))

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Checked codes (B, n, F) -> the latents the decoder reads (B, D, F)."""
        return self.refine(self.quantizer.decode(codes), codes)

    # --- inference --------------------------------------------------------------------------------------
    def pad_to_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """Zero-pad on the right to whole frames: the last partial frame is encoded, not dropped."""
        return nn.functional.pad(audio, (0, (-audio.shape[-1]) % self.hop_length))

    def as_batch(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """(T,), (B, T) or (B, 1, T) -> (B, 1, T) float32 on the model's device, resampled to the model's rate."""
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() == 3:
            if audio.shape[1] != 1:
                raise ValueError(f"expected mono audio (B, 1, T), got shape {tuple(audio.shape)}")
            audio = audio[:, 0]
        if audio.dim() != 2:
            raise ValueError(f"expected audio (T,), (B, T) or (B, 1, T), got shape {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise ValueError("the audio contains NaN or infinite samples")
        if sample_rate is not None and sample_rate != self.sample_rate and audio.shape[-1]:
            from .audio import resample
            audio = torch.stack([resample(a, sample_rate, self.sample_rate) for a in audio])
        return audio[:, None].to(next(self.parameters()).device)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor | list[torch.Tensor], sample_rate: int | None = None,
               num_codebooks: int | None = None, lengths: list[int] | torch.Tensor | None = None):
        """Audio (T,), (B, T) or (B, 1, T) at `sample_rate` (default: the model's) -> codes (B, Q, F) int64.

        Clips of different lengths: a list of (T_i,) or (1, T_i) tensors, or a batch zero-padded on the right with
        `lengths` (samples at `sample_rate`), gives a list of codes (Q, ceil(T_i / hop)), each equal to encoding
        that clip alone (the encoder is causal: the padding never reaches a clip's own frames)."""
        if isinstance(audio, (list, tuple)) or lengths is not None:
            return self._encode_clips(self._clips(audio, lengths), sample_rate, num_codebooks)
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 2 and 1 < audio.shape[1] <= MAX_CHANNELS < audio.shape[0]:
            # soundfile.read gives (samples, channels): taken as a batch, it would encode silently into nonsense.
            raise ValueError(f"got shape {tuple(audio.shape)}, which looks like (samples, channels); the codec is "
                             f"mono: pass audio.mean(1) (the command line downmixes this way) or audio.T as a batch")
        audio = self.as_batch(audio, sample_rate)
        if audio.shape[-1] == 0:
            raise ValueError("the audio is empty")
        return self.quantizer.encode(self.encoder(self.pad_to_frames(audio)), num_codebooks)

    def _clips(self, audio, lengths) -> list[torch.Tensor]:
        """A list of clips or a padded batch with lengths -> a list of (T_i,) tensors, checked."""
        if lengths is None:
            clips = [torch.as_tensor(a, dtype=torch.float32) for a in audio]
            for i, clip in enumerate(clips):
                if clip.dim() == 2 and clip.shape[0] == 1:
                    clips[i] = clip[0]
                elif clip.dim() != 1:
                    raise ValueError(f"clip {i}: expected (T,) or (1, T), got shape {tuple(clip.shape)}")
        else:
            if isinstance(audio, (list, tuple)):
                raise ValueError("lengths goes with a zero-padded batch (B, T) or (B, 1, T), not with a list")
            batch = self.as_batch(audio)[:, 0]
            lengths = [int(n) for n in torch.as_tensor(lengths).reshape(-1)]
            if len(lengths) != len(batch):
                raise ValueError(f"{len(lengths)} lengths for a batch of {len(batch)}")
            if any(not 0 <= n <= batch.shape[-1] for n in lengths):
                raise ValueError(f"lengths must be between 1 and the padded length {batch.shape[-1]}, got {lengths}")
            clips = [clip[:n] for clip, n in zip(batch, lengths)]
        if not clips:
            raise ValueError("no clips to encode")
        for i, clip in enumerate(clips):
            if clip.shape[-1] == 0:
                raise ValueError(f"clip {i} is empty (length 0)")
        return clips

    def _encode_clips(self, clips: list[torch.Tensor], sample_rate: int | None,
                      num_codebooks: int | None) -> list[torch.Tensor]:
        """Clips sorted by length and grouped, so that a call pads little and stays under BATCH_SAMPLES."""
        clips = [self.as_batch(clip, sample_rate)[0, 0] for clip in clips]
        budget = BATCH_SAMPLES["cpu" if clips[0].device.type == "cpu" else "other"]
        groups: list[list[int]] = [[]]
        for i in sorted(range(len(clips)), key=lambda i: len(clips[i])):
            if groups[-1] and (len(groups[-1]) + 1) * len(clips[i]) > budget:
                groups.append([])
            groups[-1].append(i)
        codes: list[torch.Tensor | None] = [None] * len(clips)
        for group in groups:
            batch = nn.utils.rnn.pad_sequence([clips[i] for i in group], batch_first=True)[:, None]
            for i, c in zip(group, self.quantizer.encode(self.encoder(self.pad_to_frames(batch)), num_codebooks)):
                codes[i] = c[:, :math.ceil(len(clips[i]) / self.hop_length)]
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor | list[torch.Tensor], length: int | None = None,
               lengths: list[int] | torch.Tensor | None = None):
        """Codes (B, Q, F) with Q <= num_codebooks -> audio (B, T) at the model's rate, cut to `length`.

        Items of different lengths: a list of codes (Q, F_i), or a batch (B, Q, F) with `lengths` (samples, as
        `encode` was given), gives a list of audio (T_i,), each equal to decoding that item alone (T_i: the
        item's length, or F_i * hop for a list without lengths)."""
        if isinstance(codes, (list, tuple)) or lengths is not None:
            return self._decode_items(codes, lengths)
        codes = torch.as_tensor(codes).long()
        if codes.dim() == 2:
            codes = codes[None]
        device = next(self.parameters()).device
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 0, device=device)
        audio = self.decoder(self.latents_from_codes(codes.to(device)))[:, 0]
        return audio if length is None else audio[:, :length]

    def _decode_items(self, codes, lengths) -> list[torch.Tensor]:
        if isinstance(codes, (list, tuple)):
            items = [torch.as_tensor(c).long() for c in codes]
            items = [c[0] if c.dim() == 3 and c.shape[0] == 1 else c for c in items]
            if any(c.dim() != 2 for c in items) or len({c.shape[0] for c in items}) > 1:
                raise ValueError(f"expected codes (Q, F_i) with one Q, got shapes {[tuple(c.shape) for c in items]}")
            frames = [c.shape[-1] for c in items]
        else:
            batch = torch.as_tensor(codes).long()
            if batch.dim() != 3:
                raise ValueError(f"expected codes (B, Q, F) with lengths, got shape {tuple(batch.shape)}")
            items, frames = list(batch), [batch.shape[-1]] * len(batch)
        if lengths is None:
            lengths = [f * self.hop_length for f in frames]
        lengths = [int(n) for n in torch.as_tensor(lengths).reshape(-1)]
        if len(lengths) != len(items):
            raise ValueError(f"{len(lengths)} lengths for a batch of {len(items)}")
        if not items:
            raise ValueError("no codes to decode")
        for i, (n, f) in enumerate(zip(lengths, frames)):
            if not 0 < n <= f * self.hop_length:
                raise ValueError(f"item {i}: length {n} is not between 1 and its {f} frames' {f * self.hop_length} "
                                 f"samples")
        # Frames past an item's end are set to a valid id: the decoder is causal, so they never reach its samples.
        needed = [math.ceil(n / self.hop_length) for n in lengths]
        padded = torch.zeros(len(items), items[0].shape[0], max(needed), dtype=torch.long)
        for i, (item, f) in enumerate(zip(items, needed)):
            padded[i, :, :f] = item[:, :f]
        audio = self.decode(padded)
        return [a[:n] for a, n in zip(audio, lengths)]

    def fuse_weight_norm(self) -> "Codec":
        """Fold weight norm into plain weights for inference (the weights stop being re-normalised on every
        call). Training needs the parametrization, so only inference loading does this."""
        from torch.nn.utils import parametrize
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def stream_encoder(self, num_codebooks: int | None = None, sample_rate: int | None = None,
                       batch_size: int | None = None) -> StreamingEncoder:
        """A new live stream (its own state: open as many as you like on one model); `with` closes it.
        `sample_rate`: the rate of the audio it will be pushed (resampled as it goes); default the model's."""
        return StreamingEncoder(self, num_codebooks, sample_rate, batch_size)

    def stream_decoder(self, batch_size: int | None = None) -> StreamingDecoder:
        """A new live stream of codes to audio (its own state); `with` closes it."""
        return StreamingDecoder(self, batch_size)

    def encode_streams(self, pushes: dict[StreamingEncoder, torch.Tensor],
                       sample_rate: int | None = None) -> dict[StreamingEncoder, torch.Tensor]:
        """Push audio into many open streams of this model in batched calls; each stream's new codes."""
        return encode_streams(self, pushes, sample_rate)

    def decode_streams(self, pushes: dict[StreamingDecoder, torch.Tensor]) -> dict[StreamingDecoder, torch.Tensor]:
        """Push codes into many open stream decoders of this model in batched calls; each stream's audio."""
        return decode_streams(self, pushes)
