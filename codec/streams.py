"""Live streams: each stream owns its state; one model steps any number of them together.

`Codec.stream_encoder()` and `Codec.stream_decoder()` open one stream; its `push` runs the model at once.
`Codec.encode_streams({stream: audio, ...})` and `Codec.decode_streams({stream: codes, ...})` step many open
streams in batched model calls: the streams' states are concatenated along the batch, run once, and split back.
Streams start, push and end independently, with chunks of any sizes.

An encoder stream keeps the samples that do not yet fill a frame and runs the model on whole frames only, so
every layer's state has the same shape in every stream (what lets states concatenate) and a frame's codes come
out as soon as its last sample is in. Because every layer is causal, the codes equal the offline `encode`'s.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import StreamError
from .nn.streaming import StreamState, bound

if TYPE_CHECKING:
    from .model import Codec


class _Stream:
    """What encoder and decoder streams share: the model, a lazily made state, the batch size, the end."""
    kind = "stream"
    parts: tuple[str, ...] = ()  # the codec's children whose streaming layers keep state in this kind of stream

    def __init__(self, codec: Codec, batch_size: int | None) -> None:
        self.codec, self.batch_size = codec, batch_size
        self.state: StreamState | None = None
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def close(self) -> None:
        """End the stream; its state is dropped. Closing twice is harmless."""
        self.closed, self.state = True, None

    def _check_batch(self, batch_size: int) -> None:
        if self.closed:
            raise StreamError(f"this stream {self.kind} has ended (flush or close ends it): open a new one")
        if self.batch_size is not None and batch_size != self.batch_size:
            raise StreamError(f"this stream {self.kind} carries a batch of {self.batch_size}, "
                              f"got a push of {batch_size}")

    def _start(self, batch_size: int) -> None:
        """At the first push: the batch size is fixed and the state of the stream's `parts` of the model made."""
        if self.state is None:
            self.batch_size = batch_size
            self.state = StreamState.init(self.codec, batch_size, self.parts)


class StreamingEncoder(_Stream):
    """Feed audio (n,), (B, n) or (B, 1, n) of any size with `push`; get the codes of every frame completed so far.

    `flush` zero-pads the last partial frame, exactly as the offline `encode` does, and ends the stream.
    Concatenating everything returned equals `Codec.encode` on the whole signal. `close` (or leaving a `with`
    block) ends the stream without the last partial frame. An ended stream refuses `push` and `flush`.
    Audio at another rate than the model's: open the stream with `sample_rate=` and it resamples as it goes
    (soxr's streaming resampler); `push(audio, sample_rate=r)` checks that r is the rate the stream takes.
    """
    kind = "encoder"
    parts = ("encoder", "quantizer")

    def __init__(self, codec: Codec, num_codebooks: int | None = None, sample_rate: int | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(codec, batch_size)
        codec.quantizer._check(num_codebooks)
        self.num_codebooks = num_codebooks or codec.num_codebooks
        self.sample_rate = sample_rate or codec.sample_rate
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        self.samples = 0                          # at the model's rate, pushed so far
        self.frames_out = 0                       # frames of codes returned so far
        self.pending: torch.Tensor | None = None  # (B, n < hop): samples that do not yet fill a frame
        self.resampler = None

    def _check(self, audio: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
        """A push's audio as (B, n), refused if it does not fit this stream."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise StreamError(f"this stream takes {self.sample_rate} Hz audio, got {sample_rate} Hz: open it with "
                              f"stream_encoder(sample_rate={sample_rate}) to resample")
        audio = self.codec.as_batch(audio)[:, 0]
        self._check_batch(audio.shape[0])
        return audio

    def _take(self, audio: torch.Tensor) -> None:
        """Add checked audio (resampled to the model's rate) to the pending samples."""
        self._start(audio.shape[0])
        if self.sample_rate != self.codec.sample_rate:
            audio = self._resample(audio, last=False)
        if self.pending is None:
            self.pending = audio[:, :0]
        self.samples += audio.shape[-1]
        self.pending = torch.cat([self.pending, audio], dim=-1)

    def _resample(self, audio: torch.Tensor, last: bool) -> torch.Tensor:
        import soxr
        if self.resampler is None:
            self.resampler = soxr.ResampleStream(self.sample_rate, self.codec.sample_rate, self.batch_size,
                                                 dtype="float32", quality="HQ")
        out = self.resampler.resample_chunk(np.ascontiguousarray(audio.cpu().numpy().T), last=last)
        return torch.from_numpy(np.ascontiguousarray(out.T)).to(audio.device).reshape(self.batch_size, -1)

    def push(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return self.codec.encode_streams({self: audio}, sample_rate)[self]

    @torch.no_grad()
    def flush(self) -> torch.Tensor | None:
        """Codes of the zero-padded last partial frame, and of the frames an encoder with look-ahead still holds
        (None if there are none). An encoder's `lookahead_frames` (0 for causal ones) of zeros are pushed after
        the end, as offline encoding pads, and only the signal's own frames are kept."""
        self._check_batch(self.batch_size or 1)
        codes = None
        if self.resampler is not None:  # the resampler's own delay line
            rest = self._resample(torch.zeros(self.batch_size, 0), last=True)
            self.samples += rest.shape[-1]
            self.pending = torch.cat([self.pending, rest.to(self.pending.device)], dim=-1)
        hop, lookahead = self.codec.hop_length, self.codec.encoder_lookahead
        if self.pending is not None and (self.pending.shape[-1] or lookahead):
            missing = (-self.pending.shape[-1]) % hop + lookahead * hop
            padded = torch.nn.functional.pad(self.pending, (0, missing))
            self.pending = padded[:, :0]
            signal_frames = -(-self.samples // hop)  # the offline encoding's frame count
            codes = _encode_group(self.codec, [self], padded, signal_frames - self.frames_out)[0]
            self.frames_out += codes.shape[-1]
        self.close()
        return codes


class StreamingDecoder(_Stream):
    """Feed codes (B, Q, f) with `push`; get back the audio of every frame up to `codec.decoder_lookahead` frames
    before the last one pushed (a refiner that reads frames ahead; 0 for causal models, whose pushes return f *
    hop_length samples each): f * hop_length samples once that many frames are in, fewer before. `flush` returns
    the audio of the frames still behind and ends the stream: concatenating everything returned equals
    `Codec.decode`. `close` (or leaving a `with` block) ends the stream without them; an ended stream refuses
    `push` and `flush`."""
    kind = "decoder"
    parts = ("quantizer", "refiner", "decoder")

    def __init__(self, codec: Codec, batch_size: int | None) -> None:
        super().__init__(codec, batch_size)
        self.frames_in = 0  # frames of codes pushed so far

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode_streams({self: codes})[self]

    @torch.no_grad()
    def flush(self) -> torch.Tensor | None:
        """The audio (B, frames * hop) of the frames still waiting for the frames after them (None if there are
        none): the refiner reads standardised zeros after the last frame, as offline decoding pads."""
        self._check_batch(self.batch_size or 1)
        waiting, audio = min(self.codec.decoder_lookahead, self.frames_in), None
        if waiting:
            with bound(self.codec, self.state):
                latents = self.codec.refiner.flush(self.batch_size)
                audio = self.codec.decoder(latents[..., latents.shape[-1] - waiting:])[:, 0]
        self.close()
        return audio


def placeholder_frames(lookahead: int, frames_in: int, frames: int) -> int:
    """Of a push of `frames` frames to a decoder stream that has had `frames_in`, how many its refiner returns
    before the signal's first frame (its first `lookahead` frames out stand for no frame): a stream drops them."""
    return min(frames, max(0, lookahead - frames_in))


def _encode_group(codec: Codec, streams: list[StreamingEncoder], audio: torch.Tensor,
                  frames: int | None = None) -> list[torch.Tensor]:
    """One model call for streams whose audio (sum of batch sizes, whole frames) is stacked in `audio`; with
    `frames`, only the first `frames` frames are quantized (a flush's padding is no frame of the signal, and a
    searching quantizer would weigh it in its choice of the signal's codes)."""
    sizes = [s.batch_size for s in streams]
    with bound(codec, StreamState.cat([s.state for s in streams])) as state:
        codes = codec.quantizer.encode(codec.encoder(audio[:, None])[..., :frames], streams[0].num_codebooks)
    for stream, part in zip(streams, state.split(sizes)):
        stream.state = part
    return list(codes.split(sizes))


@torch.no_grad()
def encode_streams(codec: Codec, pushes: dict[StreamingEncoder, torch.Tensor],
                   sample_rate: int | None = None) -> dict[StreamingEncoder, torch.Tensor]:
    """Each stream's new codes (B, Q, frames completed by this push; possibly 0 frames). Streams with the same
    number of new frames run in one batched call (live streams pushed a frame each: all in one call)."""
    hop = codec.hop_length
    checked = {stream: stream._check(audio, sample_rate) for stream, audio in pushes.items()}  # all, then any
    for stream, audio in checked.items():
        stream._take(audio)
    groups: dict[tuple[int, int, int], list[StreamingEncoder]] = defaultdict(list)
    # An encoder with look-ahead returns frames when its own blocks complete, which differs between streams:
    # each stream then runs alone. Streams group by their number of codebooks too, since a predictive
    # quantizer's codes depend on the frames quantized before at that number.
    alone = codec.encoder_lookahead > 0
    for stream in pushes:
        groups[(stream.pending.shape[-1] // hop, stream.num_codebooks, id(stream) if alone else 0)].append(stream)
    results = {}
    for (frames, _, _), streams in groups.items():
        if frames == 0:
            for stream in streams:
                results[stream] = torch.zeros(stream.batch_size, stream.num_codebooks, 0, dtype=torch.long,
                                              device=stream.pending.device)
            continue
        take = frames * hop
        audio = torch.cat([s.pending[:, :take] for s in streams])
        for stream, codes in zip(streams, _encode_group(codec, streams, audio)):
            stream.pending = stream.pending[:, take:]
            stream.frames_out += codes.shape[-1]
            results[stream] = codes
    return results


@torch.no_grad()
def decode_streams(codec: Codec,
                   pushes: dict[StreamingDecoder, torch.Tensor]) -> dict[StreamingDecoder, torch.Tensor]:
    """Each stream's audio (B, f * hop) for its codes (B, Q, f), lagging by `codec.decoder_lookahead` frames: a
    stream's first pushes return less until that many frames are in. Streams with the same f and Q (and as many
    frames still to drop) run in one call."""
    device, lookahead = next(codec.parameters()).device, codec.decoder_lookahead
    groups: dict[tuple[int, int, int], list[tuple[StreamingDecoder, torch.Tensor]]] = defaultdict(list)
    for stream, codes in pushes.items():  # every push checked before any stream changes
        codes = torch.as_tensor(codes).long().to(device)
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3:
            raise ValueError(f"expected codes (B, Q, F) or (Q, F), got shape {tuple(codes.shape)}")
        stream._check_batch(codes.shape[0])
        codec.quantizer.check_codes(codes)
        placeholders = placeholder_frames(lookahead, stream.frames_in, codes.shape[-1])
        groups[(*codes.shape[1:], placeholders)].append((stream, codes))
    for members in groups.values():
        for stream, codes in members:
            stream._start(codes.shape[0])
            stream.frames_in += codes.shape[-1]
    results = {}
    for (_, frames, placeholders), members in groups.items():
        streams = [s for s, _ in members]
        if frames == 0:
            results.update({s: torch.zeros(s.batch_size, 0, device=device) for s in streams})
            continue
        sizes = [s.batch_size for s in streams]
        with bound(codec, StreamState.cat([s.state for s in streams])) as state:
            latents = codec.latents_from_codes(torch.cat([codes for _, codes in members]))[..., placeholders:]
            audio = codec.decoder(latents)[:, 0] if latents.shape[-1] else latents.new_zeros(sum(sizes), 0)
        for stream, part, piece in zip(streams, state.split(sizes), audio.split(sizes)):
            stream.state, results[stream] = part, piece
    return results
