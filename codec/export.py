"""`codec export`: encode a corpus into token shards for speech language models, resumably, over many processes.

The utterance list is cut, in order, into shards of `shard_size`; shard i belongs to process i % world_size
(RANK and WORLD_SIZE, as `accelerate launch` and `torchrun` set them), so any number of processes writes the
files one process would. The processes work in step, one shard each at a time, and share after every shard
whether one has failed, so that a bad file under --strict stops them all. A shard is done when its record in
`progress/` exists: the record is written after all of the shard's files are renamed into place, so a killed
export redoes exactly the shards without a record.
When every shard is done, process 0 writes `manifest.json` and `errors.tsv` from the records. A shard whose every
file was bad has a record (with its errors) but no files, and is left out of the manifest's shard list.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from . import audio as audio_io
from .audio import AtomicOutput
from .corpus import Utterance
from .errors import AudioError, CodecError, ConfigError, OutputError
from .files import BLOCK_SECONDS
from .model import Codec
from .processes import ProcessGroup
from .shards import Row, code_dtype, field_names, schema, write_parquet, write_token_stream, write_webdataset
from .tokendata import FORMAT, FORMAT_VERSION, MANIFEST, stream_dtype

PROGRESS = "progress"
ERRORS = "errors.tsv"


@dataclass
class ExportConfig:
    out: Path
    num_codebooks: int | None = None   # None: all of the model's
    shard_size: int = 1000             # utterances per shard
    batch_size: int = 8                # utterances encoded at once, on a CPU too (docs/export.md)
    webdataset: bool = False           # also write shard-NNNNN.tar
    token_stream: bool = False         # also write shard-NNNNN.bin + shard-NNNNN.idx.json
    strict: bool = False               # a bad file ends the export instead of going to errors.tsv
    force: bool = False                # start over in a folder that holds another export
    data_root: Path | None = None      # the `path` column is relative to it; None: the folder holding every file


@torch.no_grad()
def encode_batch(codec: Codec, audios: list[torch.Tensor], num_codebooks: int | None = None) -> list[torch.Tensor]:
    """Mono audio at the model's rate, of any lengths -> codes (Q, ceil(length / hop)) each, equal to encoding
    each alone.

    The batch is zero-padded on the right to its longest member. The encoder is causal, so the padding never
    reaches an earlier frame, and an utterance's last partial frame sees zeros after its end, as it does alone
    (`Codec.encode` zero-pads it too). Blocks go through the streaming encoder, as in `codec encode`, so memory
    stays bounded whatever the lengths.
    """
    device = next(codec.parameters()).device
    batch = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True)[:, None]
    # Blocks of BLOCK_SECONDS per utterance, whatever the batch size: each utterance is cut where it would be
    # alone, so batching changes nothing but the batch dimension. (A block shared by the batch, 1.25 s each for 8,
    # cost no more CPU time than one by one, but flipped 1 code in 22,472 frames against `codec encode`: a near-tie.)
    block = int(BLOCK_SECONDS * codec.sample_rate)
    encoder = codec.stream_encoder(num_codebooks)
    parts = []
    try:
        for start in range(0, batch.shape[-1], block):
            parts.append(encoder.push(batch[..., start:start + block].to(device)))
    finally:
        tail = encoder.flush()
    codes = torch.cat(parts + ([tail] if tail is not None else []), dim=-1).cpu()
    return [codes[i, :, :math.ceil(len(audio) / codec.hop_length)] for i, audio in enumerate(audios)]


def stored_path(path: Path, root: Path) -> str:
    """What the `path` column holds: the audio's path relative to the data root, normalised (`..` only where
    the file lies outside it), so that it means the same from any working directory: data_root / path."""
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _common_folder(utterances: list[Utterance]) -> Path:
    """The deepest folder that holds every utterance."""
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(u.path)) for u in utterances]))


def _error(utterance: Utterance, root: Path, error: AudioError, strict: bool) -> list[str]:
    if strict:
        raise error
    clean = " ".join(str(error).split())  # one line, no tabs: errors.tsv stays a table
    return [utterance.id, stored_path(utterance.path, root), clean]


@dataclass
class _Job:
    """One export's fixed parts: the model, the settings (codebook count resolved), the code type, the schema."""
    codec: Codec
    config: ExportConfig
    dtype: np.dtype
    table_schema: pa.Schema

    def run_shard(self, index: int, utterances: list[Utterance], bar: tqdm) -> None:
        """Encode a shard, write its files, then its record: the record is what marks the shard as done."""
        out, name = self.config.out, f"shard-{index:05d}"
        rows, errors = self._encode(utterances, bar)
        # What a killed run left of this shard: temporaries, and files it had renamed into place before the kill.
        for stale in [*out.glob(f"{name}.*"), *out.glob(f".{name}.*"), *out.glob(f"{PROGRESS}/.{name}.*")]:
            stale.unlink()
        files = self._write(name, rows) if rows else {}  # `datasets` refuses a Parquet file of no rows
        record = {"shard": index, **files, "utterances": len(rows), "duration_seconds": sum(r.duration for r in rows),
                  "frames": sum(int(r.codes.shape[1]) for r in rows),
                  "parquet_bytes": (out / files["parquet"]).stat().st_size if files else 0, "errors": errors}
        with AtomicOutput(out / PROGRESS / f"{name}.json", force=True) as temporary:
            temporary.write_text(json.dumps(record))

    def _write(self, name: str, rows: list[Row]) -> dict[str, str]:
        out, files = self.config.out, {"parquet": f"{name}.parquet"}
        write_parquet(out / files["parquet"], rows, self.table_schema, self.dtype)
        if self.config.webdataset:
            files["webdataset"] = f"{name}.tar"
            write_webdataset(out / files["webdataset"], rows, field_names(self.table_schema))
        if self.config.token_stream:
            files["tokens"], files["tokens_index"] = f"{name}.bin", f"{name}.idx.json"
            write_token_stream(out / files["tokens"], out / files["tokens_index"], rows, self.config.num_codebooks,
                               self.codec.codebook_size)
        return files

    def _encode(self, utterances: list[Utterance], bar: tqdm) -> tuple[list[Row], list[list[str]]]:
        """Rows in manifest order, and an error line per bad file. Similar lengths are batched together (sorted
        by duration from the file headers) so that little of a batch is padding."""
        codec, config = self.codec, self.config
        rows: dict[int, Row] = {}
        errors: dict[int, list[str]] = {}
        headers = {}
        for i, utterance in enumerate(utterances):
            try:
                headers[i] = audio_io.info(utterance.path)
            except AudioError as error:
                errors[i] = _error(utterance, config.data_root, error, config.strict)
                bar.update()
        order = sorted(headers, key=lambda i: headers[i].frames / headers[i].samplerate)
        for start in range(0, len(order), config.batch_size):
            batch, loaded = order[start:start + config.batch_size], {}
            for i in batch:
                try:
                    loaded[i] = torch.cat(list(audio_io.blocks(utterances[i].path, codec.sample_rate, BLOCK_SECONDS)))
                except AudioError as error:
                    errors[i] = _error(utterances[i], config.data_root, error, config.strict)
            codes = encode_batch(codec, list(loaded.values()), config.num_codebooks) if loaded else []
            for (i, audio), code in zip(loaded.items(), codes):
                header = headers[i]
                rows[i] = Row(utterances[i], stored_path(utterances[i].path, config.data_root),
                              header.frames / header.samplerate, header.samplerate, header.channels, len(audio),
                              code.numpy().astype(self.dtype))
            bar.update(len(batch))
        return [rows[i] for i in sorted(rows)], [errors[i] for i in sorted(errors)]


def _plan(codec: Codec, utterances: list[Utterance], config: ExportConfig, num_codebooks: int) -> dict:
    """What the shards' content depends on; resuming with anything different would mix two exports."""
    digest = hashlib.sha256()
    for u in utterances:
        digest.update(json.dumps([u.id, stored_path(u.path, config.data_root), u.fields], sort_keys=True,
                                 default=str).encode() + b"\n")
    return {"data_root": str(config.data_root), "model_name": codec.name, "weights_sha256": codec.weights_sha256 or "",
            "tokenizer_sha256": codec.tokenizer_sha256 or "", "num_codebooks": num_codebooks,
            "shard_size": config.shard_size, "webdataset": config.webdataset, "token_stream": config.token_stream,
            "utterances": len(utterances), "utterances_sha256": digest.hexdigest()}


def _clear(out: Path) -> None:
    for pattern in ("shard-*", ".shard-*", f"{PROGRESS}/*", f"{PROGRESS}/.*", MANIFEST, ERRORS):
        for path in out.glob(pattern):
            path.unlink()


def _prepare(out: Path, plan: dict, force: bool) -> None:
    """Start a new export in `out`, or find the same one there to resume."""
    plan_path = out / PROGRESS / "plan.json"
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder")
    if plan_path.is_file() and plan_path.read_text() == json.dumps(plan, indent=1):
        return
    # A plan without a finished shard (an export that failed at once, under --strict say) holds nothing to resume
    started = plan_path.is_file() and any((out / PROGRESS).glob("shard-*.json"))
    if not force and started:
        raise OutputError(f"{out}: holds an export with other settings or inputs (use --force to start over)")
    if not force and not plan_path.is_file() and out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out}: is not empty and holds no export (use --force, or an empty folder)")
    if out.is_dir():
        _clear(out)
    (out / PROGRESS).mkdir(parents=True, exist_ok=True)
    with AtomicOutput(plan_path, force=True) as temporary:
        temporary.write_text(json.dumps(plan, indent=1))


def _manifest(codec: Codec, plan: dict, records: list[dict], dtype: np.dtype) -> dict:
    n, size = plan["num_codebooks"], codec.codebook_size
    shards = [{k: v for k, v in r.items() if k != "errors"} for r in records if r["utterances"]]
    duration = sum(r["duration_seconds"] for r in records)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "data_root": plan["data_root"], "model_name": codec.name,
        "weights_sha256": plan["weights_sha256"], "tokenizer_sha256": plan["tokenizer_sha256"],
        "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate,
        "hop_length": codec.hop_length, "num_codebooks": n, "codebook_sizes": codec.codebook_sizes[:n],
        "code_dtype": dtype.name, "utterances": sum(r["utterances"] for r in records),
        "duration_seconds": duration, "duration_hours": duration / 3600, "frames": sum(r["frames"] for r in records),
        "errors": sum(len(r["errors"]) for r in records),
        "parquet_bytes": sum(r["parquet_bytes"] for r in records),
        "shards": shards}
    if plan["token_stream"]:
        manifest["token_stream"] = {
            "dtype": stream_dtype(n * size + 1).name, "vocab_size": n * size + 1, "separator": n * size,
            "layout": "per utterance, frame-major: token[f * Q + q] = codes[q, f] + q * K, then the separator "
                      "Q * K; shard .bin files hold raw tokens without a header and concatenate in shard order"}
    return manifest


def _finish(out: Path, codec: Codec, plan: dict, num_shards: int, dtype: np.dtype) -> dict:
    records = []
    for index in range(num_shards):
        path = out / PROGRESS / f"shard-{index:05d}.json"
        if not path.is_file():
            raise OutputError(f"{out}: shard {index} was not completed; run the export again to finish it")
        records.append(json.loads(path.read_text()))
    lines = [["id", "path", "error"]] + [line for r in records for line in r["errors"]]
    with AtomicOutput(out / ERRORS, force=True) as temporary:
        temporary.write_text("".join("\t".join(line) + "\n" for line in lines))
    manifest = _manifest(codec, plan, records, dtype)
    with AtomicOutput(out / MANIFEST, force=True) as temporary:
        temporary.write_text(json.dumps(manifest, indent=1))
    return manifest


def export(codec: Codec, utterances: list[Utterance], config: ExportConfig, progress: bool = True) -> dict | None:
    """Encode every utterance into shards under `config.out`; returns the manifest on process 0, else None."""
    if not utterances:
        raise ConfigError("no audio files to export")
    seen: dict[str, Path] = {}
    for u in utterances:
        if seen.setdefault(u.id, u.path) != u.path:
            raise ConfigError(f"two files have the id '{u.id}': {seen[u.id]} and {u.path}")
    if config.shard_size < 1 or config.batch_size < 1:
        raise ConfigError("--shard-size and --batch-size must be at least 1")
    num_codebooks = config.num_codebooks or codec.num_codebooks
    config = ExportConfig(**{**asdict(config), "out": Path(config.out), "num_codebooks": num_codebooks,
                             "data_root": Path(os.path.abspath(config.data_root or _common_folder(utterances)))})
    plan = _plan(codec, utterances, config, num_codebooks)
    dtype = code_dtype(codec.codebook_size)
    # Each shard names its model and rates in its schema metadata, so that one file alone can be decoded.
    described = {"model_name": codec.name, "weights_sha256": plan["weights_sha256"],
                 "tokenizer_sha256": plan["tokenizer_sha256"], "num_codebooks": num_codebooks,
                 "codebook_size": codec.codebook_size, "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate}
    job = _Job(codec, config, dtype, schema(utterances, dtype, {"codec": json.dumps(described)}))
    shards = [utterances[s:s + config.shard_size] for s in range(0, len(utterances), config.shard_size)]
    group = ProcessGroup()
    try:
        failure = None
        if group.rank == 0:
            try:
                _prepare(config.out, plan, config.force)
            except OutputError as error:
                failure = error
            except OSError as error:
                failure = OutputError(f"{config.out}: cannot write ({error.strerror})")
        failure = group.gather(failure)[0]
        if failure is not None:
            raise failure
        _run_shards(job, group, shards, progress)
        return _finish(config.out, codec, plan, len(shards), dtype) if group.rank == 0 else None
    finally:
        group.close()


def _run_shards(job: _Job, group: ProcessGroup, shards: list[list[Utterance]], progress: bool) -> None:
    """This process's unfinished shards, in step with the other processes: after each shard all of them learn
    whether one has failed, so that all stop together with one line each (a process left waiting at a
    collective for one that has exited dies of gloo's error instead), and process 0 counts everyone's progress."""
    mine = range(group.rank, len(shards), group.size)
    todo = [i for i in mine if not (job.config.out / PROGRESS / f"shard-{i:05d}.json").is_file()]
    counts = group.gather((len(todo), sum(len(shards[i]) for i in mine if i not in todo)))
    description = "exporting" if group.size == 1 else f"exporting ({group.size} processes)"
    with tqdm(total=sum(len(shard) for shard in shards), initial=sum(done for _, done in counts), desc=description,
              unit="utt", disable=not progress or group.rank != 0) as bar:
        for step in range(max(steps for steps, _ in counts)):
            failure, size = None, 0
            if step < len(todo):
                size = len(shards[todo[step]])
                try:
                    job.run_shard(todo[step], shards[todo[step]], bar)
                except Exception as error:  # raised below, once the other processes know of it
                    failure = error
            outcomes = group.gather((failure and _one_line(failure), size))
            if failure is not None:
                raise failure
            for rank, (message, exported) in enumerate(outcomes):
                if message:
                    raise CodecError(f"process {rank} of {group.size} failed: {message}")
                if rank != group.rank:
                    bar.update(exported)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, CodecError) else f"{type(error).__name__}: {text}"
