"""Reading exported tokens back: `TokenDataset` over the Parquet shards, and the flat token-stream layout.

Token stream layout (one utterance): frame-major, codebook q of frame f at position f * Q + q, shifted by q * K
so that every codebook has its own range of ids: token = codes[q, f] + q * K. A separator token, Q * K, follows
every utterance. The vocabulary is therefore Q * K + 1 ids. Each shard has its own `.bin` and index;
`join_token_stream` makes the one array (and index) over every shard that a GPT-style trainer reads.
"""
from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .audio import AtomicOutput
from .errors import CodesFileError
from .codes_file import CodesFile
from .model import Codec

MANIFEST = "manifest.json"
FORMAT = "codec-token-shards"
FORMAT_VERSION = "1"
ROW_GROUP_SIZE = 64  # utterances per Parquet row group: the unit TokenDataset reads


def stream_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def to_token_stream(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Codes (Q, F) -> tokens (F * Q + 1,): frame-major, codebook q offset by q * K, then the separator."""
    num_codebooks = codes.shape[0]
    offsets = np.arange(num_codebooks, dtype=np.int64)[:, None] * codebook_size
    tokens = (codes.astype(np.int64) + offsets).T.reshape(-1)
    return np.append(tokens, num_codebooks * codebook_size)


def from_token_stream(tokens: np.ndarray, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """The inverse of `to_token_stream` for one utterance (with or without its trailing separator)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) and tokens[-1] == num_codebooks * codebook_size:  # the separator is no code's token
        tokens = tokens[:-1]
    if len(tokens) % num_codebooks:
        raise ValueError(f"{len(tokens)} tokens are not whole frames of {num_codebooks} codebooks")
    offsets = np.arange(num_codebooks, dtype=np.int64)[:, None] * codebook_size
    return tokens.reshape(-1, num_codebooks).T - offsets


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CodesFileError(f"{path}: not a readable export manifest ({error})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CodesFileError(f"{path}: not a '{FORMAT}' version {FORMAT_VERSION} manifest")
    return manifest


def join_token_stream(folder: str | Path, target: str | Path, force: bool = False) -> list[dict]:
    """Concatenate an export's token streams, in shard order, into `target`: raw tokens of the manifest's
    `token_stream.dtype`, for `np.memmap`. Beside it, `<target stem>.idx.json` (as a shard's index) gives every
    utterance's id, offset and length (the separator after it not counted) in tokens from the start of
    `target`; the entries are also returned."""
    folder, target = Path(folder), Path(target)
    manifest = read_manifest(folder)
    if "token_stream" not in manifest:
        raise CodesFileError(f"{folder}: exported without --token-stream")
    itemsize = np.dtype(manifest["token_stream"]["dtype"]).itemsize
    entries, start = [], 0
    with AtomicOutput(target, force) as temporary, open(temporary, "wb") as joined:
        for shard in manifest["shards"]:
            index = json.loads((folder / shard["tokens_index"]).read_text())
            entries += [{**entry, "offset": entry["offset"] + start} for entry in index["utterances"]]
            with open(folder / shard["tokens"], "rb") as piece:
                shutil.copyfileobj(piece, joined)
            start += (folder / shard["tokens"]).stat().st_size // itemsize
    with AtomicOutput(target.with_suffix(".idx.json"), force) as temporary:
        temporary.write_text(json.dumps({"dtype": manifest["token_stream"]["dtype"], "utterances": entries}))
    return entries


class TokenDataset(torch.utils.data.Dataset):
    """The utterances of a `codec export` folder, in shard order, for speech-LM training.

    Item i is a dict of the row's fields (id, path, duration, num_samples, text, speaker, ...) with `codes` as a
    (Q, F) int64 tensor, cut to the first `num_codebooks` if given. `manifest` holds the model, rates and
    codebook sizes. Opening reads only the shards' footers; rows are read one Parquet row group at a time (the
    export writes groups of ROW_GROUP_SIZE utterances) and the last few groups read are kept, so memory stays
    bounded whatever the size of the export, and reading in order decodes each group once.
    """

    cached_groups = 4

    def __init__(self, folder: str | Path, num_codebooks: int | None = None) -> None:
        import pyarrow.parquet as pq
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.num_codebooks = num_codebooks or self.manifest["num_codebooks"]
        if not 1 <= self.num_codebooks <= self.manifest["num_codebooks"]:
            raise ValueError(f"num_codebooks must be between 1 and {self.manifest['num_codebooks']}")
        self._groups: list[tuple[str, int]] = []  # (shard file, row group) in reading order
        sizes = []
        for shard in self.manifest["shards"]:
            metadata = pq.ParquetFile(self.folder / shard["parquet"]).metadata
            for group in range(metadata.num_row_groups):
                self._groups.append((shard["parquet"], group))
                sizes.append(metadata.row_group(group).num_rows)
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._cache: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict:  # DataLoader workers start with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}

    def _row(self, index: int):
        """(row group table, row within it) of utterance `index`."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} utterances")
        index %= len(self)
        group = int(np.searchsorted(self._starts, index, side="right")) - 1
        if group not in self._cache:
            import pyarrow.parquet as pq
            shard, number = self._groups[group]
            self._cache[group] = pq.ParquetFile(self.folder / shard).read_row_group(number)
            while len(self._cache) > self.cached_groups:
                self._cache.popitem(last=False)
        self._cache.move_to_end(group)
        return self._cache[group], index - int(self._starts[group])

    def codes(self, index: int) -> torch.Tensor:
        """Only the codes of utterance `index`, (Q, F) int64, without converting its other fields."""
        table, row = self._row(index)
        books = table.column("codes")[row].values  # Q lists of F codes
        flat = books.flatten().to_numpy(zero_copy_only=False)
        return torch.from_numpy(flat.astype(np.int64).reshape(len(books), -1)[:self.num_codebooks])

    def __getitem__(self, index: int) -> dict:
        table, row = self._row(index)
        fields = table.slice(row, 1).drop_columns(["codes"]).to_pylist()[0]
        return {**fields, "codes": self.codes(index)}

    def check_model(self, codec: Codec) -> None:
        """Refuse a model that neither made these codes nor shares their tokenizer (its encoder and quantizer),
        with the CodesFileError that decoding a .codes file from another model raises."""
        made_by = self.manifest
        CodesFile(  # the export described as a codes file, without its frames
            torch.zeros(made_by["num_codebooks"], 0, dtype=torch.long), made_by["model_name"],
            made_by["weights_sha256"], made_by["sample_rate"], made_by["frame_rate"], 0, 1,
            made_by["codebook_sizes"], made_by["tokenizer_sha256"]).check_model(codec, self.folder / MANIFEST)

    def audio_path(self, index: int) -> Path:
        """The source audio of utterance `index`: its `path` is relative to the manifest's `data_root`."""
        table, row = self._row(index)
        return Path(self.manifest["data_root"]) / table.column("path")[row].as_py()

    def tokens(self, index: int) -> np.ndarray:
        """Utterance `index` in the flat token-stream layout (see the module docstring), separator included."""
        return to_token_stream(self.codes(index).numpy(), self.manifest["codebook_sizes"][0])
