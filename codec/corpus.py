"""What a corpus holds: utterances (an id, an audio path, and the fields the source carries, such as text or
speaker) read from a folder, a LibriTTS tree, or a JSONL/CSV/TSV manifest.

Folders are searched recursively; the id is the path relative to the folder without its suffix. A file in the
LibriTTS layout (`<subset>/<speaker>/<chapter>/<speaker>_<chapter>_*.wav` with `<utt>.normalized.txt` beside it)
also gets its text, speaker, chapter and subset. A manifest names the audio in a `file`, `path` or `audio`
column (relative paths are taken from the manifest's folder); an `id` column gives the id, and every other
column is carried along as a field. Manifests are UTF-8, with or without the byte-order mark Excel writes; a
CSV/TSV row with more values than the header has columns is an error (a comma in an unquoted text, most often),
one with fewer leaves the missing fields empty.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_EXTENSIONS, list_audio
from .errors import ConfigError

PATH_COLUMNS = ("file", "path", "audio")
MANIFEST_KINDS = "a .jsonl, .csv or .tsv file, or a list of paths one a line"


@dataclass
class Utterance:
    id: str
    path: Path
    fields: dict[str, object] = field(default_factory=dict)


def read_utterances(source: str | Path, split: str | None = None) -> list[Utterance]:
    """Every utterance in a folder or manifest; `split` keeps manifest rows whose `split` column has that value."""
    path = Path(source)
    if path.is_dir():
        if split:
            raise ConfigError(f"{source}: --split needs a manifest with a 'split' column, not a folder")
        return [_from_folder_file(file, path) for file in list_audio([path])]
    if not path.is_file():
        raise ConfigError(f"{source}: no such folder or manifest")
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise ConfigError(f"{source}: is an audio file; give a folder or a manifest ({MANIFEST_KINDS})")
    rows = _manifest_rows(path)
    if split:
        if rows and "split" not in rows[0]:
            raise ConfigError(f"{source}: --split {split} given, but the manifest has no 'split' column")
        rows = [r for r in rows if r.get("split") == split]
    return [_from_row(row, path, number) for number, row in enumerate(rows, start=1)]


def data_root(source: str | Path) -> Path:
    """The folder a corpus's paths are taken from, absolute: the folder itself, or the manifest's folder."""
    path = Path(os.path.abspath(source))
    return path if path.is_dir() else path.parent


def _manifest_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix in {".tsv", ".csv"}:
            return _table_rows(path, "\t" if suffix == ".tsv" else ",")
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1)
                 if line.strip()]
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text manifest (a manifest is {MANIFEST_KINDS})") from None
    except (OSError, csv.Error) as error:
        raise ConfigError(f"{path}: cannot read the manifest ({error})") from None
    if suffix in {".jsonl", ".json"}:
        rows = []
        for number, line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    return [{"path": line.strip()} for _, line in lines]  # a plain list of paths, one a line


def _table_rows(path: Path, delimiter: str) -> list[dict]:
    separator = "tab" if delimiter == "\t" else "comma"
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row in reader:
            if None in row:  # where DictReader puts the values beyond the header's columns
                raise ConfigError(f"{path}:{reader.line_num}: {len(reader.fieldnames) + len(row[None])} values for "
                                  f"{len(reader.fieldnames)} columns; quote a field that holds a {separator}")
            rows.append(row)
    return rows


def _from_row(row: dict, manifest: Path, number: int) -> Utterance:
    column = next((c for c in PATH_COLUMNS if row.get(c)), None)
    if column is None:
        raise ConfigError(f"{manifest}: row {number} has no audio path (a 'file', 'path' or 'audio' column)")
    written = Path(str(row[column]))
    identifier = row.get("id")
    fields = {k: v for k, v in row.items() if k not in (column, "id")}
    return Utterance(str(identifier) if identifier not in (None, "") else _path_id(written, manifest.parent),
                     manifest.parent / written, fields)


def _path_id(written: Path, folder: Path) -> str:
    """A manifest row's id when it has none: its path without suffix, relative to the manifest's folder where it
    lies inside it, never absolute (ids name members of tar shards)."""
    if written.is_absolute():
        try:
            written = written.relative_to(folder.resolve())
        except ValueError:
            written = Path(*written.parts[1:])
    return written.with_suffix("").as_posix()


def _from_folder_file(file: Path, root: Path) -> Utterance:
    fields: dict[str, object] = {}
    text = file.with_suffix(".normalized.txt")
    if text.is_file():
        fields["text"] = text.read_text(encoding="utf-8").strip()
    speaker, chapter = file.parent.parent.name, file.parent.name
    if file.stem.startswith(f"{speaker}_{chapter}_"):  # the LibriTTS naming: <speaker>_<chapter>_<para>_<sent>
        fields.update(speaker=speaker, chapter=chapter, subset=file.parents[2].name)
    return Utterance(file.relative_to(root).with_suffix("").as_posix(), file, fields)
