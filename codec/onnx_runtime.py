"""Run the graphs `codec onnx` writes with onnxruntime: offline, or stream by stream with explicit state.

This is what a host without PyTorch does, in Python: `OnnxCodec(folder).encode(audio)` and `.decode(codes)`;
`stream_state("encoder_streaming", batch)` gives the zeros a new stream starts from and `step` runs one chunk of
whole frames, returning the output and the next state.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ModelError
from .onnx import FORMAT, FORMAT_VERSION, GRAPHS


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
        for graph in GRAPHS:
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

    def step(self, graph: str, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """One chunk through a streaming graph: audio of whole frames (encoder) or codes (decoder)."""
        session = self._session(graph)
        if graph == "encoder_streaming" and x.shape[-1] % self.hop_length:
            raise ValueError(f"a streaming encoder takes whole frames: {x.shape[-1]} samples is not a multiple of "
                             f"{self.hop_length}")
        name = "audio" if graph.startswith("encoder") else "codes"
        outputs = session.run(None, {name: x, **state})
        names = [o.name for o in session.get_outputs()[1:]]
        return outputs[0], {"state." + n[len("next."):]: value for n, value in zip(names, outputs[1:])}
