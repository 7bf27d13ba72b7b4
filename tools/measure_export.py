"""Measure `codec export`: throughput batched vs one by one, shard bytes per hour of audio, and whether the
exported codes equal the codes `codec encode` writes (`files.encode_file`, the code behind that command).

    python tools/measure_export.py --model bundled --every 15 --out /tmp/measure

`--model random` builds an untrained model of configs/low-latency.yaml (seed 0) for when the bundled weights
do not exist yet. Throughput is counted in CPU time (user + system of this process, around the export call only),
so that other jobs on a shared machine slow the wall clock but not the figure; wall time is printed beside it.

Sizes: the timed runs put every utterance in one shard (fewer than the default 1,000). Each shard file also has
a fixed part (Parquet's footer and schema, a tar's end-of-archive padding), measured by exporting the same
utterances again in shards of `--overhead-shard-size`: (bytes with n shards - bytes with 1) / (n - 1). Bytes per
audio hour are then given for shards of the default size, at this set's mean utterance duration.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from codec.config import ModelConfig, load_yaml
from codec.corpus import read_utterances
from codec.export import ExportConfig, export
from codec.files import encode_file
from codec.model import Codec
from codec.tokendata import TokenDataset
from codec.weights import load

MODEL = Path(__file__).parents[1] / "configs" / "low-latency.yaml"


def model(name: str) -> Codec:
    if name != "random":
        return load(name)
    torch.manual_seed(0)
    return Codec.from_config(load_yaml(ModelConfig, MODEL)).fuse_weight_norm().eval()


KINDS = ("parquet", "webdataset", "tokens")


def timed_export(codec: Codec, utterances, out: Path, batch_size: int, shard_size: int) -> tuple[dict, dict]:
    """(timings, manifest) of one export."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    manifest = export(codec, utterances, ExportConfig(out, shard_size=shard_size, batch_size=batch_size,
                                                      webdataset=True, token_stream=True, force=True), progress=False)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    hours = manifest["duration_hours"]
    return {"batch_size": batch_size, "cpu_seconds": cpu, "wall_seconds": wall,
            "audio_hours_per_cpu_hour": hours * 3600 / cpu,
            "audio_hours_per_wall_hour": hours * 3600 / wall}, manifest


def sizes(out: Path, manifest: dict) -> dict[str, int]:
    return {kind: sum((out / shard[kind]).stat().st_size for shard in manifest["shards"]) for kind in KINDS}


def size_report(whole: tuple[Path, dict], sharded: tuple[Path, dict], shard_size: int) -> dict:
    """Bytes per audio hour in shards of `shard_size` utterances, from one export in a single shard (`whole`)
    and one in several (`sharded`) of the same utterances, each (folder, manifest)."""
    (_, whole_manifest), (_, sharded_manifest) = whole, sharded
    one, many = sizes(*whole), sizes(*sharded)
    extra_shards = len(sharded_manifest["shards"]) - len(whole_manifest["shards"])
    overhead = {kind: (many[kind] - one[kind]) / extra_shards for kind in KINDS}
    hours = whole_manifest["duration_hours"]
    shard_hours = shard_size * hours / whole_manifest["utterances"]
    return {"measured_in_one_shard_bytes_per_audio_hour": {kind: one[kind] / hours for kind in KINDS},
            "per_shard_overhead_bytes": overhead,
            f"bytes_per_audio_hour_in_shards_of_{shard_size}": {
                kind: (one[kind] - overhead[kind]) / hours + overhead[kind] / shard_hours for kind in KINDS}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="weights file, 'bundled', or 'random'")
    parser.add_argument("--manifest", default="/work/shared/data/MANIFEST.tsv")
    parser.add_argument("--split", default="train")
    parser.add_argument("--every", type=int, default=15, help="take every n-th utterance of the split")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="sizes are measured on the first")
    parser.add_argument("--overhead-shard-size", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    codec = model(args.model)
    utterances = read_utterances(args.manifest, args.split)[::args.every]
    default_shard_size = ExportConfig(args.out).shard_size
    exports = [timed_export(codec, utterances, args.out / f"batch{b}", b, default_shard_size)
               for b in args.batch_sizes]
    _, sharded = timed_export(codec, utterances, args.out / "sharded", args.batch_sizes[0], args.overhead_shard_size)
    exported = [TokenDataset(args.out / f"batch{b}") for b in args.batch_sizes]
    agree = {"batched_equals_one_by_one": [0, 0], "equals_codec_encode": [0, 0]}  # [utterances, frames]
    total_frames = 0
    for i in range(len(exported[0])):
        reference = encode_file(codec, exported[0].audio_path(i), args.out / "reference.codes", force=True).codes
        one_by_one, batched = exported[0].codes(i), exported[-1].codes(i)
        for key, (a, b) in {"batched_equals_one_by_one": (batched, one_by_one),
                            "equals_codec_encode": (batched, reference)}.items():
            agree[key][0] += torch.equal(a, b)
            agree[key][1] += int((a == b).all(dim=0).sum())
        total_frames += reference.shape[1]
    print(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "utterances": len(exported[0]),
                      "audio_hours": exported[0].manifest["duration_hours"], "runs": [r for r, _ in exports],
                      "sizes": size_report((args.out / f"batch{args.batch_sizes[0]}", exports[0][1]),
                                           (args.out / "sharded", sharded), default_shard_size),
                      **{key: {"utterances": f"{u}/{len(exported[0])}", "frames": f"{f}/{total_frames}"}
                         for key, (u, f) in agree.items()}}, indent=1))
