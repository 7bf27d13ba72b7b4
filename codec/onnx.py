"""`codec onnx`: the model as ONNX graphs that run without PyTorch (onnxruntime, C++, C#, a browser).

Four graphs, each a file in the output folder:
- encoder.onnx: audio (B, T) float32 at the model's rate -> codes (B, Q, ceil(T / hop)) int64, all Q codebooks.
- decoder.onnx: codes (B, Q, F) int64 (-1: a dropped stage) -> audio (B, F * hop).
- encoder_streaming.onnx: audio (B, n * hop) and the state -> codes (B, Q, n) and the next state.
- decoder_streaming.onnx: codes (B, Q, n) and the state -> audio (B, n * hop) and the next state.
  A model whose refiner reads frames ahead streams its decoding in two graphs instead, since a stream drops its
  first frames and flushes its last (`OnnxStreamDecoder` joins them):
  - latents_streaming.onnx: codes (B, Q, n), flush (1,) int64 and the state -> the refined latents (B, D, n) of
    the n frames `lookahead_frames` behind the last one in, and the next state; with flush 1 (and any codes of
    `lookahead_frames` frames) the waiting frames are refined with the zeros after the signal instead.
  - synthesis_streaming.onnx: latents (B, D, m) and the state -> audio (B, m * hop) and the next state.
The streaming state is explicit: inputs named `state.<layer>.<field>`, outputs `next.<layer>.<field>`; a new
stream starts from zeros of the shapes in the metadata (`state`: name, shape with "batch", dtype), and a streaming
graph takes whole frames only (the host keeps the samples that do not yet fill one). Every graph carries the
model's metadata (format, version, name, weights and tokenizer sha256, rates, codebooks), which `OnnxCodec` checks.

What changes for export: the inverse-STFT head synthesises with matrix products and overlap-adds with shifted
sums (ONNX has no inverse FFT), and the nearest-code search is the plain fp32 one (K x D scores at once).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from .audio import AtomicOutput, check_folder
from .config import to_dict
from .errors import ModelError, OutputError
from .model import Codec
from .nn.streaming import StreamState, bound
from .quantize import FactorizedQuantizer
from .quantize.search import _squared_norms

FORMAT, FORMAT_VERSION = "codec-onnx", "1"
GRAPHS = ("encoder", "decoder", "encoder_streaming", "decoder_streaming")
# what stands for decoder_streaming when the model's refiner reads frames ahead: codes -> refined latents, then
# latents -> audio; the host drops a stream's first frames between them (`onnx_runtime.OnnxStreamDecoder`)
SPLIT_DECODER = ("latents_streaming", "synthesis_streaming")
OPSET = 17


class _Search(nn.Module):
    """One stage's nearest code, as `quantize.search` finds it in fp32: argmin ||c||^2 - 2 x.c."""

    def __init__(self, stage: nn.Module) -> None:
        super().__init__()
        self.stage = stage
        basis, transform, bias = (t.detach().float() if t is not None else None for t in stage.codebook_parts())
        self.register_buffer("basis_t", basis.T.contiguous())
        self.register_buffer("transform", transform if transform is not None else torch.eye(basis.shape[1]))
        self.register_buffer("norms", _squared_norms(basis, transform, bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = nn.functional.normalize(self.stage.project_in(x), dim=1) \
            if isinstance(self.stage, FactorizedQuantizer) else x
        ids = (self.norms - 2 * (query @ self.transform) @ self.basis_t).argmin(1)
        return ids, self.stage.vectors(ids)


def _state_names(state: StreamState) -> list[tuple[str, str]]:
    return [(layer, field) for layer, layer_state in state.layers.items() for field, _ in layer_state._tensors()]


class _Graph(nn.Module):
    """One path of the model with the streaming state as plain tensors in and out. Its `stage`: "encoder" (audio
    -> codes), "decoder" (codes -> audio), or the decoder in two, for a stream whose refiner reads frames ahead:
    "latents" (codes -> the refined latents, `lookahead_frames` behind; with a `flush` input that refines the
    waiting frames instead) and "synthesis" (latents -> audio); the host drops a stream's first frames between
    them."""
    PARTS = {"encoder": ("encoder",), "decoder": ("quantizer", "refiner", "decoder"),
             "latents": ("quantizer", "refiner"), "synthesis": ("decoder",)}

    def __init__(self, codec: Codec, stage: str, streaming: bool) -> None:
        super().__init__()
        self.codec, self.stage, self.streaming = codec, stage, streaming
        self.searches = nn.ModuleList(_Search(stage) for stage in codec.quantizer.stages)
        # a decoder's state holds the quantizer's and the refiner's too: a predictive quantizer's last frame, the
        # refiner's past frames
        self.parts = self.PARTS[stage]
        self.template = StreamState.init(codec, 1, self.parts)
        self.names = _state_names(self.template)

    def _latents(self, codes: torch.Tensor, flush: torch.Tensor | None = None) -> torch.Tensor:
        latents, counts = self.codec.quantizer.dequantize(codes), (codes >= 0).sum(1)
        if self.codec.refiner is None:
            return latents
        if flush is not None:  # the zeros after the last frame, as offline refining pads
            future = self.codec.refiner.shift[None, :, None].to(latents)
            latents, counts = torch.where(flush > 0, future, latents), torch.where(flush > 0, 0, counts)
        return self.codec.refiner(latents, counts)

    def _run(self, x: torch.Tensor, flush: torch.Tensor | None) -> torch.Tensor:
        if self.stage == "decoder":
            return self.codec.decoder(self._latents(x))[:, 0]
        if self.stage == "latents":
            return self._latents(x, flush)
        if self.stage == "synthesis":
            return self.codec.decoder(x)[:, 0]
        if not self.streaming:  # zero-pad the last partial frame, as Codec.encode does
            x = nn.functional.pad(x, (0, (-x.shape[-1]) % self.codec.hop_length))
        latents = self.codec.encoder(x[:, None])
        batch, residual, ids = latents.shape[0], latents.transpose(1, 2).reshape(-1, latents.shape[1]), []
        for search in self.searches:
            stage_ids, vectors = search(residual)
            residual = residual - vectors
            ids.append(stage_ids.reshape(batch, -1))
        return torch.stack(ids, 1)

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor):
        flush, states = (inputs[0], inputs[1:]) if self.stage == "latents" else (None, inputs)
        if not self.streaming:
            return self._run(x, flush)
        layers: dict[str, dict[str, torch.Tensor]] = {}
        for (layer, field), tensor in zip(self.names, states):
            layers.setdefault(layer, {})[field] = tensor
        state = StreamState({layer: type(self.template.layers[layer])(**fields) for layer, fields in layers.items()},
                            x.shape[0])
        with bound(self.codec, state):
            out = self._run(x, flush)
        return (out, *[getattr(state.layers[layer], field) for layer, field in self.names])


def metadata(codec: Codec, graph: str, state: list[dict] | None = None) -> dict[str, str]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "graph": graph, "model_name": codec.name,
            "weights_sha256": codec.weights_sha256 or "", "tokenizer_sha256": codec.tokenizer_sha256 or "",
            "sample_rate": str(codec.sample_rate), "hop_length": str(codec.hop_length),
            "frame_rate": str(codec.frame_rate), "num_codebooks": str(codec.num_codebooks),
            "codebook_sizes": json.dumps(codec.codebook_sizes), "config": json.dumps(to_dict(codec.config)),
            "state": json.dumps(state or [])}


# each stage's main input and output, and their axes
_AXES = {"audio": {0: "batch", 1: "samples"}, "codes": {0: "batch", 2: "frames"}, "latents": {0: "batch", 2: "frames"}}
_IO = {"encoder": ("audio", "codes"), "decoder": ("codes", "audio"), "latents": ("codes", "latents"),
       "synthesis": ("latents", "audio")}


def _export_graph(codec: Codec, graph: str, path: Path) -> None:
    import onnx
    stage, streaming = graph.removesuffix("_streaming"), graph.endswith("streaming")
    module = _Graph(codec, stage, streaming).eval()
    frames = 3
    codes = torch.randint(0, min(codec.codebook_sizes), (2, codec.num_codebooks, frames))
    x = {"audio": torch.randn(2, frames * codec.hop_length + (0 if streaming else 5)) * 0.1, "codes": codes,
         "latents": codec.quantizer.dequantize(codes).detach()}[_IO[stage][0]]
    main_in, main_out = _IO[stage]
    states = StreamState.init(codec, 2, module.parts) if streaming else None
    state_inputs = [getattr(states.layers[layer], field) for layer, field in module.names] if streaming else []
    flush = [torch.zeros(1, dtype=torch.long)] if stage == "latents" else []  # 1: refine the waiting frames
    in_names = [main_in] + ["flush"] * bool(flush) + [f"state.{layer}.{field}" for layer, field in module.names] \
        * streaming
    out_names = [main_out] + [f"next.{layer}.{field}" for layer, field in module.names] * streaming
    dynamic = {main_in: _AXES[main_in], main_out: _AXES[main_out]}
    described = []
    for (layer, field), tensor in zip(module.names, state_inputs):
        batch_dim = type(module.template.layers[layer]).BATCH_DIMS.get(field, 0)
        dynamic[f"state.{layer}.{field}"] = dynamic[f"next.{layer}.{field}"] = {batch_dim: "batch"}
        shape = ["batch" if i == batch_dim else n for i, n in enumerate(tensor.shape)]
        described.append({"name": f"state.{layer}.{field}", "shape": shape, "dtype": str(tensor.dtype)[6:]})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with AtomicOutput(path, force=True) as temporary:
            torch.onnx.export(module, (x, *flush, *state_inputs), str(temporary), input_names=in_names,
                              output_names=out_names, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
            model = onnx.load(str(temporary))
            for key, value in metadata(codec, graph, described).items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, str(temporary))


def export_onnx(codec: Codec, folder: str | Path, graphs: tuple[str, ...] = GRAPHS, force: bool = True) -> list[Path]:
    """Write the model's graphs into `folder` (created); returns their paths. Graphs already there are refused
    before any work unless `force`."""
    folder = Path(folder)
    if not getattr(codec.encoder, "traceable", True):  # WORLD's analysis is numpy: no graph of it to trace
        graphs = tuple(g for g in graphs if not g.startswith("encoder"))
        if not graphs:
            raise ModelError(f"{codec.name}: its encoder (WORLD's analysis) has no ONNX graph; export the decoder")
        print(f"{codec.name}: its encoder (WORLD's analysis) has no ONNX graph: writing the decoder's only",
              file=sys.stderr)
    if codec.decoder_lookahead and "decoder_streaming" in graphs:
        # its stream drops the refiner's first frames and flushes its last: two graphs, the host between them
        index = graphs.index("decoder_streaming")
        graphs = graphs[:index] + SPLIT_DECODER + graphs[index + 1:]
    check_folder(folder, "the ONNX output")
    existing = [g for g in graphs if (folder / f"{g}.onnx").exists()]
    if existing and not force:
        raise OutputError(f"{folder}: holds {existing[0]}.onnx already (use --force to overwrite)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError("ONNX export needs the onnx package: pip install onnx onnxruntime") from None
    folder.mkdir(parents=True, exist_ok=True)
    heads = [m for m in codec.modules() if hasattr(m, "export_friendly")]
    for head in heads:
        head.export_friendly = True
    try:
        paths = []
        for graph in graphs:
            _export_graph(codec, graph, folder / f"{graph}.onnx")
            paths.append(folder / f"{graph}.onnx")
        return paths
    finally:
        for head in heads:
            head.export_friendly = False

