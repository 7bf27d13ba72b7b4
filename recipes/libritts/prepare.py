"""Write a TSV manifest of a LibriTTS download, for `codec train`, `codec eval` and `codec export`:

    python recipes/libritts/prepare.py /data/LibriTTS data/libritts.tsv

The folder is the one holding the subsets as they unpack from openslr.org/60 (train-clean-100, train-clean-360,
train-other-500, dev-clean, dev-other, test-clean, test-other; any of them), each SUBSET/SPEAKER/CHAPTER/ with
SPEAKER_CHAPTER_*.wav and a .normalized.txt beside each wav. Columns: id, path (relative to the manifest's
folder, as codec.corpus reads it), split (train, valid or test: the subset's role), subset, speaker, chapter,
text. Rows are sorted by id, so the file is the same on every machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

SPLITS = {"train-clean-100": "train", "train-clean-360": "train", "train-other-500": "train",
          "dev-clean": "valid", "dev-other": "valid", "test-clean": "test", "test-other": "test"}
COLUMNS = ("id", "path", "split", "subset", "speaker", "chapter", "text")


class LayoutError(Exception):
    """The folder does not look like a LibriTTS download; the message says what was expected."""


def find_subsets(root: Path) -> list[Path]:
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    if root.name in SPLITS:
        raise LayoutError(f"{root} is one subset: give the folder that holds it ({root.parent})")
    if not any((root / name).is_dir() for name in SPLITS) and (root / "LibriTTS").is_dir():
        root = root / "LibriTTS"  # the folder the archives were unpacked in
    subsets = [root / name for name in SPLITS if (root / name).is_dir()]
    if not subsets:
        raise LayoutError(f"{root}: no LibriTTS subset folder in it (expected any of {', '.join(SPLITS)})")
    return subsets


def rows(subset: Path, manifest_folder: Path) -> list[dict[str, str]]:
    found = []
    for wav in sorted(subset.glob("*/*/*.wav")):
        speaker, chapter = wav.parent.parent.name, wav.parent.name
        if not wav.stem.startswith(f"{speaker}_{chapter}_"):
            raise LayoutError(f"{wav}: a LibriTTS file is named SPEAKER_CHAPTER_*.wav inside SPEAKER/CHAPTER/")
        text = wav.with_suffix(".normalized.txt")
        if not text.is_file():
            raise LayoutError(f"{wav}: no transcript {text.name} beside it")
        found.append({"id": wav.stem, "path": Path(os.path.relpath(wav, manifest_folder)).as_posix(),
                      "split": SPLITS[subset.name], "subset": subset.name, "speaker": speaker,
                      "chapter": chapter, "text": text.read_text(encoding="utf-8").strip()})
    if not found:
        raise LayoutError(f"{subset}: no SPEAKER/CHAPTER/*.wav files in it")
    return found


def prepare(root: str | Path, manifest: str | Path) -> dict[str, int]:
    """Write the manifest; returns the number of utterances per split."""
    manifest = Path(manifest)
    if not manifest.parent.resolve().is_dir():
        raise LayoutError(f"{manifest}: folder {manifest.parent} does not exist")
    table = sorted((row for subset in find_subsets(Path(root)) for row in rows(subset, manifest.parent.resolve())),
                   key=lambda row: row["id"])
    temporary = manifest.with_name(f".{manifest.name}.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(table)
    os.replace(temporary, manifest)
    counts: dict[str, int] = {}
    for row in table:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the LibriTTS folder (holding train-clean-100/, dev-clean/, ...)")
    parser.add_argument("manifest", help="TSV file to write")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.root, args.manifest)
    except LayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.manifest}: " + ", ".join(f"{n} {split}" for split, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
