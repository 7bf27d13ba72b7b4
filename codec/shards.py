"""Writing one shard of exported tokens: Parquet rows, and optionally a WebDataset tar and a flat token stream.

Every file is written to a temporary name and renamed when complete, so a shard file that exists is whole.
All three hold the same utterances in the same order. The Parquet schema is fixed for a whole export (the
extra fields' types are decided from every utterance up front), so the shards load as one dataset.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .audio import AtomicOutput
from .corpus import Utterance
from .tokendata import ROW_GROUP_SIZE, stream_dtype, to_token_stream

# Row columns the export computes; a manifest field of the same name is replaced by the measured value.
COLUMNS = {"id": pa.string(), "path": pa.string(), "duration": pa.float64(), "source_sample_rate": pa.int32(),
           "source_channels": pa.int16(), "num_samples": pa.int64(), "num_frames": pa.int64()}


@dataclass
class Row:
    utterance: Utterance
    path: str                # of the audio, relative to the export's data root (see `export.stored_path`)
    duration: float          # seconds of the source file
    source_sample_rate: int
    source_channels: int
    num_samples: int         # at the model's rate: what decoding trims to
    codes: np.ndarray        # (Q, F) in the export's code dtype

    def fields(self, names: list[str]) -> dict[str, object]:
        """Everything but the codes, in column order, with manifest fields missing from this row as None."""
        return {"id": self.utterance.id, "path": self.path, "duration": self.duration,
                "source_sample_rate": self.source_sample_rate, "source_channels": self.source_channels,
                "num_samples": self.num_samples, "num_frames": int(self.codes.shape[1]),
                **{name: self.utterance.fields.get(name) for name in names}}


def code_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds codes 0 .. codebook_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"codebook size {codebook_size} does not fit 32 bits")


def _field_type(values: list[object]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def schema(utterances: list[Utterance], codes: np.dtype, metadata: dict[str, str]) -> pa.Schema:
    """One schema for every shard: computed columns, then the manifest's fields, then the codes (Q × F)."""
    names = sorted({name for u in utterances for name in u.fields} - COLUMNS.keys() - {"codes"})
    extra = [pa.field(name, _field_type([u.fields.get(name) for u in utterances])) for name in names]
    return pa.schema([pa.field(name, kind) for name, kind in COLUMNS.items()] + extra
                     + [pa.field("codes", pa.list_(pa.list_(pa.from_numpy_dtype(codes))))], metadata=metadata)


def _cell(value: object, kind: pa.DataType) -> object:
    """Values that do not fit the column's type (a list in a JSONL field, a number among strings) go in as JSON."""
    if value is None or kind != pa.string() or isinstance(value, str):
        return value
    return json.dumps(value)


def _codes_array(rows: list[Row], dtype: np.dtype) -> pa.Array:
    """list<list<uint>> built from flat buffers: one list per utterance, holding one list per codebook."""
    flat = np.concatenate([r.codes.reshape(-1) for r in rows]) if rows else np.zeros(0, dtype)
    frames = [r.codes.shape[1] for r in rows for _ in range(r.codes.shape[0])]
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(frames)]).astype(np.int32)),
                                     pa.array(flat.astype(dtype)))
    books = np.concatenate([[0], np.cumsum([r.codes.shape[0] for r in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(books), inner)


def field_names(table_schema: pa.Schema) -> list[str]:
    """The manifest's fields in a schema: every column but the computed ones and the codes."""
    return [f.name for f in table_schema if f.name not in COLUMNS and f.name != "codes"]


def write_parquet(path: Path, rows: list[Row], table_schema: pa.Schema, dtype: np.dtype) -> None:
    records = [r.fields(field_names(table_schema)) for r in rows]
    columns = [pa.array([_cell(rec[f.name], f.type) for rec in records], type=f.type)
               for f in table_schema if f.name != "codes"]
    table = pa.Table.from_arrays(columns + [_codes_array(rows, dtype)], schema=table_schema)
    with AtomicOutput(path, force=True) as temporary:
        pq.write_table(table, temporary, compression="zstd", row_group_size=ROW_GROUP_SIZE)


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: the same input gives the same bytes
    archive.addfile(info, io.BytesIO(data))


def webdataset_key(identifier: str) -> str:
    """An utterance's key in a WebDataset tar: its id with '%' and '.' percent-escaped. WebDataset ends a key at
    the first dot of a member's name, so dots cannot stay; escaping them, rather than replacing them, keeps ids
    such as `a.b` and `a_b` apart (and turns a `..` in an id into a plain name)."""
    return identifier.replace("%", "%25").replace(".", "%2E")


def write_webdataset(path: Path, rows: list[Row], names: list[str]) -> None:
    """A tar with `<key>.codes.npy` and `<key>.json` per utterance (see `webdataset_key`; the JSON holds the id).
    POSIX (pax) format: USTAR's names end at 255 bytes, and an id may be longer."""
    with AtomicOutput(path, force=True) as temporary, tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            key = webdataset_key(row.utterance.id)
            buffer = io.BytesIO()
            np.save(buffer, row.codes)
            _tar_member(tar, f"{key}.codes.npy", buffer.getvalue())
            _tar_member(tar, f"{key}.json", json.dumps(row.fields(names), default=str).encode())


def write_token_stream(stream: Path, index: Path, rows: list[Row], num_codebooks: int, codebook_size: int) -> None:
    """Raw tokens (`.bin`, no header: the shards' files concatenate into one stream) and a JSON index giving
    each utterance's offset and length in tokens within this file (the separator after it not counted)."""
    dtype = stream_dtype(num_codebooks * codebook_size + 1)
    pieces = [to_token_stream(r.codes, codebook_size).astype(dtype) for r in rows]
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).tolist()
    entries = [{"id": r.utterance.id, "offset": start, "length": len(p) - 1}
               for r, p, start in zip(rows, pieces, starts)]
    with AtomicOutput(stream, force=True) as temporary:
        temporary.write_bytes(b"".join(p.tobytes() for p in pieces))
    with AtomicOutput(index, force=True) as temporary:
        temporary.write_text(json.dumps({"dtype": dtype.name, "utterances": entries}))
