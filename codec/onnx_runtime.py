"""Run the graphs `codec onnx` writes with onnxruntime: offline, or stream by stream with explicit state.

This is what a host without PyTorch does, in Python: `OnnxCodec(folder).encode(audio)` and `.decode(codes)`;
`stream_state("encoder_streaming", batch)` gives the zeros a new stream starts from and `step` runs one chunk of
whole frames, returning the output and the next state. `stream_decoder()` decodes a stream of codes as
`Codec.stream_decoder()` does, through decoder_streaming.onnx, or through the two graphs a refiner that reads
frames ahead needs (it drops a stream's first frames between them and flushes its last).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ModelError
from .onnx import FORMAT, FORMAT_VERSION, GRAPHS, SPLIT_DECODER
from .streams import placeholder_frames


class OnnxCodec:
    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelError("running ONNX graphs needs onnxruntime: pip install onnxruntime") from None
        folder = Path(folder)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions, self.metadata = {}, {}
        for graph in GRAPHS + SPLIT_DECODER:
            path = folder / f"{graph}.onnx"
            if not path.is_file():
                continue
            try:
                session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime's own exception types are not public
                raise ModelError(f"{path}: not an ONNX graph onnxruntime can load ({str(error).splitlines()[0]})") \
                    from None
            meta = session.get_modelmeta().custom_metadata_map
            if meta.get("format") != FORMAT or meta.get("graph") != graph:
                raise ModelError(f"{path}: not a codec {graph} graph (no '{FORMAT}' metadata); export it with "
                                 f"`codec onnx`")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelError(f"{path}: codec ONNX format version {meta.get('format_version')}, this codec "
                                 f"reads {FORMAT_VERSION}: export it again with `codec onnx`")
            self.sessions[graph], self.metadata[graph] = session, meta
        if not self.sessions:
            raise ModelError(f"{folder}: no codec ONNX graphs ({', '.join(g + '.onnx' for g in GRAPHS)})")
        first, *others = self.metadata.items()
        for graph, meta in others:
            if (meta["model_name"], meta["weights_sha256"]) != (first[1]["model_name"], first[1]["weights_sha256"]):
                raise ModelError(f"{folder}: {graph}.onnx is from model '{meta['model_name']}' (weights "
                                 f"{meta['weights_sha256'][:12]}), {first[0]}.onnx from '{first[1]['model_name']}' "
                                 f"({first[1]['weights_sha256'][:12]}): export them together")
        meta = first[1]
        self.name, self.weights_sha256 = meta["model_name"], meta["weights_sha256"]
        self.sample_rate, self.hop_length = int(meta["sample_rate"]), int(meta["hop_length"])
        self.num_codebooks = int(meta["num_codebooks"])
        self.decoder_lookahead = json.loads(meta["config"]).get("refiner", {}).get("lookahead_frames", 0)

    def check_model(self, codec) -> None:
        """Refuse graphs exported from another model than `codec` (its weights file's sha256)."""
        if (self.name, self.weights_sha256) != (codec.name, codec.weights_sha256 or ""):
            raise ModelError(f"these ONNX graphs are from model '{self.name}' (weights {self.weights_sha256[:12]}), "
                             f"not the loaded '{codec.name}' ({(codec.weights_sha256 or '')[:12]})")

    def _session(self, graph: str):
        if graph not in self.sessions:
            raise ModelError(f"no {graph}.onnx in this folder")
        return self.sessions[graph]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Audio (B, T) float32 at the model's rate -> codes (B, Q, ceil(T / hop)) int64."""
        return self._session("encoder").run(None, {"audio": np.asarray(audio, dtype=np.float32)})[0]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (B, Q, F) int64 with every codebook (-1: a dropped stage) -> audio (B, F * hop)."""
        return self._session("decoder").run(None, {"codes": np.asarray(codes, dtype=np.int64)})[0]

    def stream_state(self, graph: str, batch_size: int) -> dict[str, np.ndarray]:
        """The state a new stream of `batch_size` starts from (zeros) for a streaming graph."""
        self._session(graph)
        return {s["name"]: np.zeros([batch_size if n == "batch" else n for n in s["shape"]], dtype=s["dtype"])
                for s in json.loads(self.metadata[graph]["state"])}

    def step(self, graph: str, x: np.ndarray, state: dict[str, np.ndarray], flush: bool = False) \
            -> tuple[np.ndarray, dict]:
        """One chunk through a streaming graph: audio of whole frames (encoder), codes (decoder, latents) or
        latents (synthesis); `flush` for latents_streaming (see `codec.onnx`)."""
        session = self._session(graph)
        if graph == "encoder_streaming" and x.shape[-1] % self.hop_length:
            raise ValueError(f"a streaming encoder takes whole frames: {x.shape[-1]} samples is not a multiple of "
                             f"{self.hop_length}")
        inputs = {session.get_inputs()[0].name: x, **state}
        if graph == "latents_streaming":
            inputs["flush"] = np.array([int(flush)], dtype=np.int64)
        outputs = session.run(None, inputs)
        names = [o.name for o in session.get_outputs()[1:]]
        return outputs[0], {"state." + n[len("next."):]: value for n, value in zip(names, outputs[1:])}

    def stream_decoder(self, batch_size: int = 1) -> "OnnxStreamDecoder":
        return OnnxStreamDecoder(self, batch_size)


class OnnxStreamDecoder:
    """A stream of codes to audio through the ONNX graphs, as `Codec.stream_decoder()`: `push(codes)` returns the
    audio of every frame up to `decoder_lookahead` frames before the last one pushed, `flush()` the rest (None if
    there is none)."""

    def __init__(self, runtime: OnnxCodec, batch_size: int) -> None:
        self.runtime, self.batch_size, self.frames_in = runtime, batch_size, 0
        self.lookahead = runtime.decoder_lookahead
        graphs = SPLIT_DECODER if self.lookahead else ("decoder_streaming",)
        self.states = {graph: runtime.stream_state(graph, batch_size) for graph in graphs}

    def _step(self, graph: str, x: np.ndarray, flush: bool = False) -> np.ndarray:
        out, self.states[graph] = self.runtime.step(graph, x, self.states[graph], flush)
        return out

    def _synthesis(self, latents: np.ndarray) -> np.ndarray:
        if not latents.shape[-1]:
            return np.zeros((self.batch_size, 0), dtype=np.float32)
        return self._step("synthesis_streaming", np.ascontiguousarray(latents))

    def push(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if not self.lookahead:
            return self._step("decoder_streaming", codes)
        placeholders = placeholder_frames(self.lookahead, self.frames_in, codes.shape[-1])
        self.frames_in += codes.shape[-1]
        return self._synthesis(self._step("latents_streaming", codes)[..., placeholders:])

    def flush(self) -> np.ndarray | None:
        waiting = min(self.lookahead, self.frames_in)
        if not waiting:
            return None
        any_codes = np.zeros((self.batch_size, self.runtime.num_codebooks, self.lookahead), dtype=np.int64)
        return self._synthesis(self._step("latents_streaming", any_codes, flush=True)[..., self.lookahead - waiting:])
