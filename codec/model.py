"""Codec: SEANet encoder -> residual quantizer -> SEANet or inverse-STFT decoder, offline or chunk by chunk."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .nn import HarmonicDecoder, ISTFTDecoder, SEANetDecoder, SEANetEncoder, StreamingModule
from .quantize import FactorizedQuantizer, ResidualQuantizer, SimVQ, VectorQuantizer

MAX_CHANNELS = 16  # a (T, C) array with at most this many columns is taken for multi-channel audio, not a batch


@dataclass
class CodecOutput:
    audio: torch.Tensor   # (B, 1, T) reconstruction, same length as the input
    codes: torch.Tensor   # (B, Q, F)
    loss: torch.Tensor    # quantizer loss (codebook + beta * commitment)


def build_quantizer(config: ModelConfig) -> ResidualQuantizer:
    q = config.quantizer
    dim = q.code_dim or config.seanet.dimension
    if q.kind == "simvq":
        stages = [SimVQ(dim, q.codebook_size, q.basis_dim, q.beta, seed=q.seed + i) for i in range(q.num_codebooks)]
    else:
        stages = [VectorQuantizer(dim, q.codebook_size, q.beta, seed=q.seed + i) for i in range(q.num_codebooks)]
    if q.code_dim:
        stages = [FactorizedQuantizer(config.seanet.dimension, q.code_dim, stage) for stage in stages]
    return ResidualQuantizer(stages)


class Codec(nn.Module):
    """A neural audio codec. `encode` turns mono audio into integer codes (B, Q, F); `decode` turns them back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config.seanet)
        self.quantizer = build_quantizer(config)
        if config.decoder == "istft":
            self.decoder = ISTFTDecoder(config.seanet.dimension, config.istft, self.encoder.hop_length)
        elif config.decoder == "harmonic":
            self.decoder = HarmonicDecoder(config.seanet.dimension, config.harmonic, self.encoder.hop_length,
                                           config.sample_rate)
        else:
            self.decoder = SEANetDecoder(config.seanet)
        # Set when loaded from a file; token files record both (see weights.tokenizer_sha256).
        self.weights_sha256: str | None = None
        self.tokenizer_sha256: str | None = None

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
        self._check_no_stream(self.encoder, "encoder")
        self._check_no_stream(self.decoder, "decoder")
        length = audio.shape[-1]
        latents = self.encoder(self._pad(audio))
        quantized = self.quantizer(latents, num_codebooks)
        return CodecOutput(self.decoder(quantized.quantized)[..., :length], quantized.codes, quantized.loss)

    # --- inference --------------------------------------------------------------------------------------
    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        """Zero-pad on the right to whole frames: the last partial frame is encoded, not dropped."""
        return nn.functional.pad(audio, (0, (-audio.shape[-1]) % self.hop_length))

    def _as_batch(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
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

    def _check_no_stream(self, part: nn.Module, name: str) -> None:
        """Streams keep their state in the model's layers: an offline call or a second stream would use it."""
        if any(m.streaming for m in part.modules() if isinstance(m, StreamingModule)):
            raise RuntimeError(f"a stream {name} is open on this model: close it first (or use it in a `with` "
                               f"block), or give each concurrent stream its own copy.deepcopy(model)")

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, sample_rate: int | None = None,
               num_codebooks: int | None = None) -> torch.Tensor:
        """Audio (T,), (B, T) or (B, 1, T) at `sample_rate` (default: the model's) -> codes (B, Q, F) int64."""
        self._check_no_stream(self.encoder, "encoder")
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 2 and 1 < audio.shape[1] <= MAX_CHANNELS < audio.shape[0]:
            # soundfile.read gives (samples, channels): taken as a batch, it would encode silently into nonsense.
            raise ValueError(f"got shape {tuple(audio.shape)}, which looks like (samples, channels); the codec is "
                             f"mono: pass audio.mean(1) (the command line downmixes this way) or audio.T as a batch")
        audio = self._as_batch(audio, sample_rate)
        if audio.shape[-1] == 0:
            raise ValueError("the audio is empty")
        return self.quantizer.encode(self.encoder(self._pad(audio)), num_codebooks)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes (B, Q, F) with Q <= num_codebooks -> audio (B, T) at the model's rate, cut to `length`."""
        self._check_no_stream(self.decoder, "decoder")
        codes = torch.as_tensor(codes).long()
        if codes.dim() == 2:
            codes = codes[None]
        device = next(self.parameters()).device
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 0, device=device)
        audio = self.decoder(self.quantizer.decode(codes.to(device)))[:, 0]
        return audio if length is None else audio[:, :length]

    def fuse_weight_norm(self) -> "Codec":
        """Fold weight norm into plain weights for inference (the weights stop being re-normalised on every
        call). Training needs the parametrization, so only inference loading does this."""
        from torch.nn.utils import parametrize
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def stream_encoder(self, num_codebooks: int | None = None) -> "StreamingEncoder":
        """One stream at a time per model (the layers hold its state); `with` closes it."""
        self._check_no_stream(self.encoder, "encoder")
        return StreamingEncoder(self, num_codebooks)

    def stream_decoder(self) -> "StreamingDecoder":
        """One stream at a time per model (the layers hold its state); `with` closes it."""
        self._check_no_stream(self.decoder, "decoder")
        return StreamingDecoder(self)


def _set_streaming(module: nn.Module, on: bool) -> None:
    for m in module.modules():
        if isinstance(m, StreamingModule):
            m.start_stream() if on else m.stop_stream()


def _check_open(stream: "StreamingEncoder | StreamingDecoder", name: str) -> None:
    if stream.closed:
        raise RuntimeError(f"this stream {name} has ended (flush or close ends it): open a new one")


class StreamingEncoder:
    """Feed audio (n,), (B, n) or (B, 1, n) of any size with `push`; get the codes of every frame completed so far.

    `flush` zero-pads the last partial frame, exactly as the offline `encode` does, and ends the stream.
    Concatenating everything returned equals `Codec.encode` on the whole signal. `close` (or leaving a `with`
    block) ends the stream without the last partial frame. An ended stream refuses `push` and `flush`: its
    layers have dropped their state, so it would encode as if from silence.
    """

    def __init__(self, codec: Codec, num_codebooks: int | None) -> None:
        self.codec, self.num_codebooks, self.samples = codec, num_codebooks, 0
        self.last: torch.Tensor | None = None
        self.closed = False
        _set_streaming(codec.encoder, True)

    def __enter__(self) -> "StreamingEncoder":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    @torch.no_grad()
    def push(self, audio: torch.Tensor) -> torch.Tensor:
        _check_open(self, "encoder")
        audio = self.codec._as_batch(audio)
        self.samples += audio.shape[-1]
        self.last = audio
        return self.codec.quantizer.encode(self.codec.encoder(audio), self.num_codebooks)

    @torch.no_grad()
    def flush(self) -> torch.Tensor | None:
        """Codes of the zero-padded last partial frame (None if the input ended on a frame boundary)."""
        _check_open(self, "encoder")
        missing = (-self.samples) % self.codec.hop_length
        codes = None
        if missing and self.last is not None:
            codes = self.push(self.last.new_zeros(*self.last.shape[:-1], missing))
        self.close()
        return codes

    def close(self) -> None:
        if not self.closed:  # twice (flush, then the `with` block's end) must not end a newer stream's state
            _set_streaming(self.codec.encoder, False)
            self.closed = True


class StreamingDecoder:
    """Feed codes (B, Q, f) with `push`; get f * hop_length samples back for each call. `close` (or leaving a
    `with` block) ends the stream; an ended stream refuses `push`."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.closed = False
        _set_streaming(codec.decoder, True)

    def __enter__(self) -> "StreamingDecoder":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    @torch.no_grad()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        _check_open(self, "decoder")
        return self.codec.decoder(self.codec.quantizer.decode(codes))[:, 0]

    def close(self) -> None:
        if not self.closed:
            _set_streaming(self.codec.decoder, False)
            self.closed = True
