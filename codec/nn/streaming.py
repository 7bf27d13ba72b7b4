"""Streaming state that belongs to a stream, not to the layers (the pattern of Moshi's `StreamingModule`).

Each streaming layer declares a typed state (`LayerState`) and makes a fresh one with `init_state(batch_size)`.
A `StreamState` holds the states of every streaming layer of a module tree for a batch of live streams. The
layers only see a state while a call runs inside `bound(module, state)`, and update it in place; between calls
the state lives with its owner. So one loaded model serves any number of streams, and the states of several
streams concatenate along the batch into one model call and split back afterwards.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn


@dataclasses.dataclass
class LayerState:
    """A layer's carry-over between calls: tensor fields whose batch is dimension 0 (or BATCH_DIMS[name])."""
    BATCH_DIMS: ClassVar[dict[str, int]] = {}

    def _tensors(self) -> list[tuple[str, int]]:
        return [(f.name, self.BATCH_DIMS.get(f.name, 0)) for f in dataclasses.fields(self)]

    @classmethod
    def cat(cls, states: list[LayerState]) -> LayerState:
        if len(states) == 1:
            return states[0]
        first = states[0]
        return cls(**{name: torch.cat([getattr(s, name) for s in states], dim) for name, dim in first._tensors()})

    def split(self, sizes: list[int]) -> list[LayerState]:
        if len(sizes) == 1:
            return [self]
        pieces = {name: getattr(self, name).split(sizes, dim) for name, dim in self._tensors()}
        return [type(self)(**{name: pieces[name][i] for name in pieces}) for i in range(len(sizes))]


class StreamingModule(nn.Module):
    """A layer that can run chunk by chunk. `self.state` is its stream's state during a call inside `bound`,
    None otherwise (offline)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: LayerState | None = None

    @property
    def streaming(self) -> bool:
        return self.state is not None

    def init_state(self, batch_size: int) -> LayerState:
        """The state before any input: what offline processing assumes left of the signal (zeros)."""
        raise NotImplementedError


class StreamState:
    """The states of all streaming layers under one module, for `batch_size` streams (or batch items)."""

    def __init__(self, layers: dict[str, LayerState], batch_size: int) -> None:
        self.layers, self.batch_size = layers, batch_size

    @classmethod
    def init(cls, module: nn.Module, batch_size: int, parts: tuple[str, ...] | None = None) -> StreamState:
        """Fresh states of the streaming layers under `module`, or only under its children named in `parts` (a
        codec's encoding half, say: the encoder and the quantizer)."""
        return cls({name: m.init_state(batch_size) for name, m in module.named_modules()
                    if isinstance(m, StreamingModule) and (parts is None or name.split(".")[0] in parts)},
                   batch_size)

    @classmethod
    def cat(cls, states: list[StreamState]) -> StreamState:
        if len(states) == 1:
            return states[0]
        names = states[0].layers
        return cls({name: type(layer).cat([s.layers[name] for s in states]) for name, layer in names.items()},
                   sum(s.batch_size for s in states))

    def split(self, sizes: list[int]) -> list[StreamState]:
        if len(sizes) == 1:
            return [self]
        pieces = {name: layer.split(sizes) for name, layer in self.layers.items()}
        return [StreamState({name: pieces[name][i] for name in pieces}, size) for i, size in enumerate(sizes)]


@contextmanager
def bound(module: nn.Module, state: StreamState) -> Iterator[StreamState]:
    """Run calls on `module` as the stream(s) of `state`; the layers update it in place and forget it after. The
    layers `state` has no state for (outside its `parts`) stay offline."""
    layers = {name: m for name, m in module.named_modules()
              if isinstance(m, StreamingModule) and name in state.layers}
    if any(m.state is not None for m in layers.values()):
        raise RuntimeError("this model is already running a stream call: one model call at a time "
                           "(step several streams together in one call instead)")
    try:
        for name, layer in layers.items():
            layer.state = state.layers[name]
        yield state
    finally:
        for layer in layers.values():
            layer.state = None


@contextmanager
def streaming(module: nn.Module, batch_size: int) -> Iterator[StreamState]:
    """`with streaming(module, batch_size):` every call inside continues one batch of streams from silence."""
    with bound(module, StreamState.init(module, batch_size)) as state:
        yield state
