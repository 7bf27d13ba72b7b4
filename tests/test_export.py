"""Token export: batched codes equal one-by-one codes, every manifest kind, all three formats, bad files,
resuming after an interrupt and after SIGKILL, and two processes writing what one writes."""
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import codec.export
import codec.shards
from codec import TokenDataset
from codec.cli import main
from codec.corpus import read_utterances
from codec.errors import OutputError, CodesFileError
from codec.export import encode_batch
from codec.files import encode_file
from codec.shards import webdataset_key
from codec.tokendata import from_token_stream, join_token_stream, to_token_stream
from codec.weights import load, load_weights, save_weights

from conftest import write

ROOT = Path(__file__).parents[1]


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture
def corpus(tmp_path):
    """Seven short clips at two rates, lengths around the tiny model's 8-sample hop, one in a subfolder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, length in enumerate([5, 8, 9, 800, 1601, 3000, 4001]):
        rate = 16000 if i % 3 == 0 else 8000
        write(folder / ("sub" if i == 3 else "") / f"clip{i}.wav", rng.standard_normal(length) * 0.1, rate)
    return folder


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batched_codes_equal_one_by_one(tiny_codec):
    torch.manual_seed(1)
    hop = tiny_codec.hop_length
    audios = [torch.randn(n) * 0.1 for n in (1, hop - 1, hop, hop + 1, 5 * hop, 37 * hop + 3, 3000 * hop + 5)]
    batched = encode_batch(tiny_codec, audios, num_codebooks=2)
    for audio, codes in zip(audios, batched):
        alone = tiny_codec.encode(audio, num_codebooks=2)[0]
        assert codes.shape == (2, -(-len(audio) // hop))
        assert torch.equal(codes, alone)  # the last, partial frame included; the longest spans several blocks


def test_export_equals_codec_encode(tmp_path, tiny_weights, corpus):
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 3,
               "--batch-size", 4) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["utterances"], len(manifest["shards"]), manifest["errors"]) == (7, 3, 0)
    assert manifest["code_dtype"] == "uint8" and manifest["codebook_sizes"] == [16, 16, 16]
    assert manifest["frame_rate"] == 1000 and manifest["weights_sha256"] == load(tiny_weights).weights_sha256
    table = pq.read_table(out / "shard-00000.parquet")
    assert str(table.schema.field("codes").type) == "list<element: list<element: uint8>>"
    dataset = TokenDataset(out)
    model = load(tiny_weights)
    assert [dataset[i]["id"] for i in range(len(dataset))] == [u.id for u in read_utterances(corpus)]
    for i in range(len(dataset)):
        row = dataset[i]
        reference = encode_file(model, dataset.audio_path(i), tmp_path / "reference.codes", force=True)
        assert torch.equal(row["codes"], reference.codes)
        assert row["num_samples"] == reference.num_samples and row["num_frames"] == reference.num_frames
    assert abs(manifest["duration_seconds"] - sum(dataset[i]["duration"] for i in range(7))) < 1e-9


def test_token_dataset_reads_one_row_group_at_a_time(tmp_path, tiny_weights, corpus, monkeypatch):
    monkeypatch.setattr(codec.shards, "ROW_GROUP_SIZE", 2)
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 3) == 0
    assert pq.ParquetFile(out / "shard-00000.parquet").metadata.num_row_groups == 2
    whole = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("*.parquet"))).to_pylist()
    dataset = TokenDataset(out, num_codebooks=2)
    dataset.cached_groups = 1
    assert len(dataset) == len(whole) == 7
    for i in (6, 0, 3, -1, 2, 5, 1, 4):
        row = dataset[i]
        assert row["id"] == whole[i]["id"] and torch.equal(row["codes"], torch.tensor(whole[i]["codes"])[:2])
        assert len(dataset._cache) == 1
    with pytest.raises(IndexError):
        dataset[7]


def test_manifests_carry_their_fields(tmp_path, corpus):
    clips = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.wav"))[:2]
    (corpus / "list.tsv").write_text("file\tspeaker\ttext\tsplit\n" + "".join(
        f"{c}\tspk{i}\thello {i}\t{'train' if i == 0 else 'holdout'}\n" for i, c in enumerate(clips)))
    (corpus / "list.csv").write_text(f"id,path,speaker\nu1,{clips[0]},alice\n")
    (corpus / "list.jsonl").write_text(json.dumps({"audio": clips[1], "text": "hi", "words": 2}) + "\n")
    tsv = read_utterances(corpus / "list.tsv", split="train")
    assert len(tsv) == 1 and tsv[0].fields == {"speaker": "spk0", "text": "hello 0", "split": "train"}
    assert tsv[0].path == corpus / clips[0] and tsv[0].id == Path(clips[0]).with_suffix("").as_posix()
    (csv,) = read_utterances(corpus / "list.csv")
    assert (csv.id, csv.fields) == ("u1", {"speaker": "alice"})
    (jsonl,) = read_utterances(corpus / "list.jsonl")
    assert jsonl.fields == {"text": "hi", "words": 2} and jsonl.path == corpus / clips[1]
    (corpus / "absolute.txt").write_text(f"{corpus.resolve() / clips[0]}\n{tmp_path.resolve() / 'x.wav'}\n")
    inside, outside = read_utterances(corpus / "absolute.txt")
    assert inside.id == Path(clips[0]).with_suffix("").as_posix()
    assert outside.id == (tmp_path.resolve() / "x").as_posix().lstrip("/")  # never an absolute tar member


def test_paths_are_stored_relative_to_the_data_root(tmp_path, tiny_weights, corpus, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text(f"path\n../corpus/clip1.wav\n{corpus / 'sub' / 'clip3.wav'}\n")
    monkeypatch.chdir(tmp_path)
    assert run("export", "--model", tiny_weights, "--data", "lists/list.csv", "--out", "listed") == 0
    assert run("export", "--model", tiny_weights, "--data", "corpus", "--out", "folder") == 0
    monkeypatch.chdir(corpus / "sub")  # the paths mean the same from anywhere
    for out, root, paths in [("listed", tmp_path / "lists", ["../corpus/clip1.wav", "../corpus/sub/clip3.wav"]),
                             ("folder", corpus, ["clip0.wav", "clip1.wav", "clip2.wav", "clip4.wav"])]:
        dataset = TokenDataset(tmp_path / out)
        assert dataset.manifest["data_root"] == str(root)
        assert [dataset[i]["path"] for i in range(len(paths))] == paths  # was lists/../corpus/clip1.wav
        assert all(dataset.audio_path(i).samefile(corpus / paths[i].split("corpus/")[-1]) for i in range(len(paths)))


def test_manifest_mistakes_are_one_line_errors(tmp_path, corpus, capsys):
    (corpus / "excel.csv").write_bytes("\ufeffpath,speaker\nclip1.wav,alice\n".encode())  # Excel's byte-order mark
    (excel,) = read_utterances(corpus / "excel.csv")
    assert excel.path == corpus / "clip1.wav" and excel.fields == {"speaker": "alice"}
    (corpus / "short.csv").write_text("path,speaker,text\nclip1.wav,bob\n")
    assert read_utterances(corpus / "short.csv")[0].fields == {"speaker": "bob", "text": None}
    (corpus / "comma.csv").write_text('path,text\nclip1.wav,"Hello, world"\nclip2.wav,Hello, world\n')
    (corpus / "tab.tsv").write_text("path\tspeaker\nclip1.wav\talice\textra\n")
    (corpus / "list").write_bytes(b"\xff\xfe\x00binary")  # not text, and its name says nothing
    for manifest, message in [("comma.csv", "comma.csv:3: 3 values for 2 columns; quote a field that holds a comma"),
                              ("tab.tsv", "tab.tsv:2: 3 values for 2 columns; quote a field that holds a tab"),
                              ("clip1.wav", "clip1.wav: is an audio file; give a folder or a manifest"),
                              ("list", "list: not a UTF-8 text manifest")]:
        assert run("export", "--data", corpus / manifest, "--out", tmp_path / "out") == 1
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and message in error, error


def test_folder_scan_follows_linked_folders_and_reports_what_it_cannot_read(tmp_path, tiny_weights, corpus, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere / "far.wav", np.zeros(100), 8000)
    (corpus / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(corpus, target_is_directory=True)  # a cycle through the link
    (corpus / "loop").symlink_to(".", target_is_directory=True)
    (corpus / "broken.wav").symlink_to(tmp_path / "missing.wav")
    os.mkfifo(corpus / "pipe.wav")  # opening it would block: it must be refused, not read
    ids = [u.id for u in read_utterances(corpus)]
    assert ids == ["broken", "clip0", "clip1", "clip2", "clip4", "clip5", "clip6", "linked/far", "pipe", "sub/clip3"]
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out) == 0
    errors = [line.split("\t") for line in (out / "errors.tsv").read_text().splitlines()[1:]]
    assert [(e[0], e[2].split(": ", 1)[1]) for e in errors] == [
        ("broken", f"broken symbolic link (to {tmp_path / 'missing.wav'})"),
        ("pipe", "not a regular file (a FIFO, socket or device)")]
    assert json.loads((out / "manifest.json").read_text())["utterances"] == 8
    capsys.readouterr()
    assert run("encode", "--model", tiny_weights, corpus, tmp_path / "codes") == 1  # the other command that scans
    assert (tmp_path / "codes" / "linked" / "far.codes").is_file()
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: /")] == [
        f"error: {corpus / 'broken.wav'}: broken symbolic link (to {tmp_path / 'missing.wav'})",
        f"error: {corpus / 'pipe.wav'}: not a regular file (a FIFO, socket or device)"]


def test_libritts_layout_gives_text_and_speaker(tmp_path, tiny_weights):
    root = tmp_path / "LibriTTS"
    chapter = root / "train-clean-100" / "19" / "198"
    chapter.mkdir(parents=True)
    write(chapter / "19_198_000000_000001.wav", np.zeros(400), 24000)
    (chapter / "19_198_000000_000001.normalized.txt").write_text("Hello there.\n")
    write(root / "other.wav", np.zeros(400), 24000)  # not LibriTTS-named: no speaker, no text
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", root, "--out", out) == 0
    rows = {row["id"]: row for row in (TokenDataset(out)[i] for i in range(2))}
    assert rows["train-clean-100/19/198/19_198_000000_000001"] | {"codes": None, "path": None} == {
        "id": "train-clean-100/19/198/19_198_000000_000001", "path": None, "duration": 400 / 24000,
        "source_sample_rate": 24000, "source_channels": 1, "num_samples": 133, "num_frames": 17,
        "text": "Hello there.", "speaker": "19", "chapter": "198", "subset": "train-clean-100", "codes": None}
    assert rows["other"]["text"] is None and rows["other"]["speaker"] is None


def test_webdataset_and_token_stream_hold_the_same_codes(tmp_path, tiny_weights, corpus):
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 4,
               "--num-codebooks", 2, "--webdataset", "--token-stream") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["token_stream"]["vocab_size"] == 33 and manifest["token_stream"]["separator"] == 32
    dataset = TokenDataset(out)
    assert dataset[0]["codes"].shape[0] == 2
    position = 0
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["webdataset"]) as tar:
            names = tar.getnames()
            members = {name: tar.extractfile(name).read() for name in names}
        index = json.loads((out / shard["tokens_index"]).read_text())
        stream = np.fromfile(out / shard["tokens"], dtype=index["dtype"])
        for entry in index["utterances"]:
            row = dataset[position]
            key = webdataset_key(row["id"])
            assert entry["id"] == row["id"] and json.loads(members[f"{key}.json"])["id"] == row["id"]
            assert np.array_equal(np.load(io.BytesIO(members[f"{key}.codes.npy"])), row["codes"].numpy())
            piece = stream[entry["offset"]:entry["offset"] + entry["length"] + 1]
            assert piece[-1] == 32 and np.array_equal(from_token_stream(piece, 2, 16), row["codes"].numpy())
            assert np.array_equal(dataset.tokens(position), piece)
            position += 1
    assert position == len(dataset) == 7


def webdataset_samples(tar_path):
    """Members grouped into samples the way WebDataset groups them: the key ends at the basename's first dot."""
    samples = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            folder, _, name = member.name.rpartition("/")
            key, _, field = name.partition(".")
            samples.setdefault(f"{folder}/{key}" if folder else key, {})[field] = tar.extractfile(member).read()
    return samples


def test_webdataset_keys_keep_ids_apart(tmp_path, tiny_weights, corpus):
    # The first two were one key when dots became underscores; the last is longer than a USTAR name allows.
    ids = ["a.b", "a_b", "a%2Eb", "x/../y.z", "speaker/" + "long_" * 60]
    (corpus / "ids.jsonl").write_text("".join(json.dumps({"id": i, "path": f"clip{n}.wav"}) + "\n"
                                              for n, i in zip([0, 1, 2, 4, 0], ids)))
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus / "ids.jsonl", "--out", out, "--webdataset") == 0
    samples = webdataset_samples(out / "shard-00000.tar")
    assert len(samples) == 5 and [json.loads(s["json"])["id"] for s in samples.values()] == ids
    assert list(samples) == [webdataset_key(i) for i in ids] and all(set(s) == {"json", "codes.npy"}
                                                                     for s in samples.values())


def test_join_token_stream_gives_one_array_over_every_shard(tmp_path, tiny_weights, corpus):
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 3,
               "--token-stream") == 0
    entries = join_token_stream(out, tmp_path / "all.bin")
    stream = np.memmap(tmp_path / "all.bin", dtype=json.loads((out / "manifest.json").read_text())["token_stream"]
                       ["dtype"], mode="r")
    assert json.loads((tmp_path / "all.idx.json").read_text())["utterances"] == entries
    dataset = TokenDataset(out)
    assert [e["id"] for e in entries] == [dataset[i]["id"] for i in range(7)]
    for i, entry in enumerate(entries):
        assert np.array_equal(stream[entry["offset"]:entry["offset"] + entry["length"] + 1], dataset.tokens(i))
    assert entries[-1]["offset"] + entries[-1]["length"] + 1 == len(stream)
    with pytest.raises(OutputError):
        join_token_stream(out, tmp_path / "all.bin")  # no overwriting without force


def test_token_dataset_checks_the_model_as_token_files_do(tmp_path, tiny_weights, corpus):
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--num-codebooks", 2) == 0
    dataset = TokenDataset(out)
    dataset.check_model(load(tiny_weights))
    for part in ("decoder", "quantizer"):
        model = load_weights(tiny_weights, for_training=True)
        with torch.no_grad():
            for parameter in getattr(model, part).parameters():
                parameter.add_(0.01)
        save_weights(model, tmp_path / f"new-{part}.safetensors")
    dataset.check_model(load(tmp_path / "new-decoder.safetensors"))  # the same tokenizer: its tokens decode
    with pytest.raises(CodesFileError, match="manifest.json: made by model 'tiny'"):
        dataset.check_model(load(tmp_path / "new-quantizer.safetensors"))


def test_token_stream_layout_is_frame_major_with_offsets():
    codes = np.array([[1, 2, 3], [4, 5, 6]])
    assert to_token_stream(codes, 10).tolist() == [1, 14, 2, 15, 3, 16, 20]
    assert np.array_equal(from_token_stream(to_token_stream(codes[:1], 10), 1, 10), codes[:1])


def test_bad_files_are_skipped_or_fatal_with_strict(tmp_path, tiny_weights, corpus, capsys):
    (corpus / "broken.wav").write_text("not audio")
    write(corpus / "silent.wav", np.zeros(0), 8000)
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 3) == 0
    assert "2 files skipped" in capsys.readouterr().err
    lines = (out / "errors.tsv").read_text().splitlines()
    assert lines[0] == "id\tpath\terror" and [line.split("\t")[0] for line in lines[1:]] == ["broken", "silent"]
    assert json.loads((out / "manifest.json").read_text())["utterances"] == 7
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", tmp_path / "strict", "--strict") == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "broken.wav: not a readable audio file" in error


def bad_first_shard(corpus):
    """Three unreadable files whose ids sort first: with --shard-size 3, shard 0 has no good file."""
    for name in ("bad0", "bad1", "bad2"):
        (corpus / f"{name}.wav").write_text("not audio")


def test_a_shard_of_bad_files_writes_no_files(tmp_path, tiny_weights, corpus):
    bad_first_shard(corpus)
    out = tmp_path / "out"
    options = ["--model", tiny_weights, "--data", corpus, "--out", out, "--shard-size", 3, "--webdataset",
               "--token-stream"]
    assert run("export", *options) == 0
    assert not list(out.glob("shard-00000*")) and (out / "progress" / "shard-00000.json").is_file()
    assert all(pq.ParquetFile(path).metadata.num_rows > 0 for path in out.glob("*.parquet"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == [1, 2, 3] and manifest["errors"] == 3
    assert len(TokenDataset(out)) == manifest["utterances"] == 7
    before = files_of(out)
    assert run("export", *options) == 0 and files_of(out) == before  # resuming finds it done


def test_datasets_loads_the_shards(tmp_path, tiny_weights, corpus):
    datasets = pytest.importorskip("datasets")
    bad_first_shard(corpus)
    (corpus / "ids.jsonl").write_text("".join(json.dumps({"id": i, "path": p}) + "\n" for i, p in [
        ("bad.x", "bad0.wav"), ("a.b", "clip0.wav"), ("a_b", "clip1.wav"), ("c", "bad1.wav")]))
    out = tmp_path / "out"
    assert run("export", "--model", tiny_weights, "--data", corpus / "ids.jsonl", "--out", out, "--shard-size", 1,
               "--webdataset") == 0
    rows, samples = (datasets.load_dataset(kind, data_files=str(out / files), split="train",
                                           cache_dir=str(tmp_path / "cache"))
                     for kind, files in [("parquet", "*.parquet"), ("webdataset", "*.tar")])
    assert rows["id"] == [s["json"]["id"] for s in samples] == ["a.b", "a_b"]
    reference = encode_file(load(tiny_weights), corpus / "clip1.wav", tmp_path / "clip1.codes").codes
    assert torch.equal(torch.tensor(rows[1]["codes"]), reference)  # the README's way to decode a row


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path, tiny_weights, corpus, monkeypatch):
    options = ["--model", tiny_weights, "--data", corpus, "--shard-size", 2, "--webdataset", "--token-stream"]
    assert run("export", *options, "--out", tmp_path / "whole") == 0
    write_webdataset = codec.export.write_webdataset
    calls = []

    def killed_in_the_second_shard(path, *args):
        calls.append(path)
        if len(calls) == 2:  # its Parquet file is in place, its tar half written, its record missing
            (path.parent / f".{path.name}.x.tmp.tar").write_bytes(b"partial")
            raise KeyboardInterrupt
        return write_webdataset(path, *args)

    monkeypatch.setattr(codec.export, "write_webdataset", killed_in_the_second_shard)
    assert run("export", *options, "--out", tmp_path / "resumed") == 130
    assert sorted(p.name for p in (tmp_path / "resumed" / "progress").iterdir()) == ["plan.json", "shard-00000.json"]
    assert (tmp_path / "resumed" / "shard-00001.parquet").is_file()
    monkeypatch.setattr(codec.export, "write_webdataset", write_webdataset)
    assert run("export", *options, "--out", tmp_path / "resumed") == 0
    assert files_of(tmp_path / "resumed") == files_of(tmp_path / "whole")
    assert run("export", *options, "--num-codebooks", 1, "--out", tmp_path / "resumed") == 1  # other settings
    assert run("export", *options, "--num-codebooks", 1, "--out", tmp_path / "resumed", "--force") == 0


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, tiny_weights, corpus):
    options = ["--model", tiny_weights, "--data", corpus, "--shard-size", 1, "--webdataset", "--token-stream"]
    assert run("export", *options, "--out", tmp_path / "whole") == 0
    out = tmp_path / "killed"
    # The export as `codec export` runs it, slowed after each Parquet file so that the kill lands mid-run, most
    # likely between a shard's files and its record.
    slowed = ("import sys, time, codec.export as export; write = export.write_parquet; "
              "export.write_parquet = lambda *args: (write(*args), time.sleep(0.3)); "
              "from codec.cli import main; sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", slowed, "export", *map(str, options), "--out", str(out)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "progress" / "shard-00001.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the export ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert not (out / "manifest.json").exists() and not (out / "progress" / "shard-00006.json").exists()
    assert run("export", *options, "--out", out) == 0
    assert files_of(out) == files_of(tmp_path / "whole")  # no temporaries, no duplicate or missing utterance
    assert [TokenDataset(out)[i]["id"] for i in range(7)] == [u.id for u in read_utterances(corpus)]


def free_port():
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def accelerate_launch(*arguments, processes=2):
    """`codec export` as the README launches several CPU processes: without --multi_gpu, accelerate launch
    starts one process on a machine without GPUs, whatever --num_processes says."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    return subprocess.run([*launch, "-m", "codec", "export", *map(str, arguments)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def test_two_processes_write_what_one_writes(tmp_path, tiny_weights, corpus):
    options = ["--model", tiny_weights, "--data", corpus, "--shard-size", 2, "--token-stream", "--webdataset"]
    assert run("export", *options, "--out", tmp_path / "one") == 0
    result = accelerate_launch(*options, "--out", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("exported 7 utterances") == 1  # from process 0 alone
    assert "exporting (2 processes): 100%|██████████| 7/7" in result.stderr  # everyone's progress, not its own
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")


def test_strict_stops_every_process_with_one_line(tmp_path, tiny_weights, corpus):
    (corpus / "clip2b.wav").write_text("not audio")  # in shard 1 (clip2, clip2b): process 1's first
    result = accelerate_launch("--model", tiny_weights, "--data", corpus, "--shard-size", 2, "--strict",
                               "--out", tmp_path / "out")
    reason = f"{corpus / 'clip2b.wav'}: not a readable audio file"
    # The processes share stderr: a line may follow the progress bar's text, or the other's line before its "\n".
    errors = sorted(re.findall(r"error: (?:(?!error: )[^\r\n])*", result.stderr))
    assert result.returncode != 0 and len(errors) == 2, result.stderr[-3000:]
    assert errors[0].startswith(f"error: {reason}") and errors[1].startswith(f"error: process 1 of 2 failed: {reason}")
    assert "RuntimeError" not in result.stderr and "gloo" not in result.stderr  # process 0 used to die at a barrier


def test_a_launch_of_one_process_is_warned_about(tmp_path, tiny_weights, corpus, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")  # what accelerate's single-process launcher sets
    assert run("export", "--model", tiny_weights, "--data", corpus, "--out", tmp_path / "out") == 0
    assert "warning: accelerate launch started this export as a single process" in capsys.readouterr().err
