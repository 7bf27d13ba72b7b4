"""The `codec` command: a thin layer over the Python API. Bad input is one line on stderr and exit code 1."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from .errors import CodecError, printable

EXIT_FAILURE = 1
THREADS_DEFAULT = 2  # with OMP_WAIT_POLICY=passive (codec/__init__.py): measured in docs/hardening.md


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP raised as Ctrl-C is: by default Python dies of them without unwinding, which would leave
    an AtomicOutput's temporary file behind (a killed `codec decode` left a hidden .wav)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    def stop(signum, frame):
        raise Stopped(signum)
    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:  # main() also runs inside other programs (the tests): give them their handlers back
        for number, handler in previous.items():
            signal.signal(number, handler)




def _load_model(name: str):
    from .weights import load
    return load(name)


def _num_codebooks(codec, num_codebooks: int | None, bandwidth: float | None) -> int | None:
    """What --num-codebooks or --bandwidth asks of `codec`; None: all of its codebooks."""
    if num_codebooks is not None:
        if not 1 <= num_codebooks <= codec.num_codebooks:
            raise CodecError(f"--num-codebooks must be between 1 and {codec.num_codebooks}")
        return num_codebooks
    if bandwidth is not None:
        try:
            return codec.codebooks_for_bandwidth(bandwidth)
        except ValueError as error:
            raise CodecError(str(error)) from None
    return None


def _run_files(pairs, folder_mode: bool, description: str, run) -> int:
    """`run(done, failed)` over (source, target) pairs with a progress bar of files; returns the exit code. In a
    folder a file's failure is one line and the others go on (exit code 1 at the end); for a single file the error
    ends the command."""
    from tqdm import tqdm
    from .audio import make_output_folders
    make_output_folders(pairs, folder_mode)
    failures = 0
    with tqdm(total=len(pairs), desc=description, unit="file", disable=not folder_mode) as bar:
        def failed(source, error):
            nonlocal failures
            failures += 1
            bar.update()
            tqdm.write(f"error: {printable(str(error))}", file=sys.stderr)
        run(lambda source: bar.update(), failed if folder_mode else None)
    if failures:
        print(f"error: {failures} of {len(pairs)} files failed", file=sys.stderr)
    return EXIT_FAILURE if failures else 0


def cmd_encode(args) -> int:
    from .audio import AUDIO_EXTENSIONS, pair_outputs
    from .files import CODES_SUFFIX, check_encode, encode_files
    pairs, folder_mode = pair_outputs(args.paths[:-1], args.paths[-1], CODES_SUFFIX, AUDIO_EXTENSIONS)
    if not folder_mode:
        check_encode(*pairs[0], args.force)  # a single bad input or output is reported before the model loads
    codec = _load_model(args.model)
    n = _num_codebooks(codec, args.num_codebooks, args.bandwidth)
    return _run_files(pairs, folder_mode, "encoding",
                      lambda done, failed: encode_files(codec, pairs, n, args.force, done=done, failed=failed))


def cmd_decode(args) -> int:
    from .audio import pair_outputs
    from .files import CODES_SUFFIX, check_decode, decode_files
    pairs, folder_mode = pair_outputs(args.paths[:-1], args.paths[-1], ".wav", {CODES_SUFFIX})
    if not folder_mode:
        check_decode(*pairs[0], args.force)
    codec = _load_model(args.model)
    return _run_files(pairs, folder_mode, "decoding",
                      lambda done, failed: decode_files(codec, pairs, args.force, done=done, failed=failed))


def cmd_info(args) -> int:
    from .codes_file import load_codes
    for path in args.files:
        print(load_codes(path).describe(path))
    return 0


def cmd_eval(args) -> int:
    from .baselines import parse_baseline
    from .evaluate import ModelSystem, Options, check_systems, evaluate, evaluation_files
    from .metrics import table
    from .processes import choose_device
    _check_output_folder(args.out)
    files, texts, text_source = evaluation_files(args.data, args.split, args.subset, args.reference_rate,
                                                 args.text_column)
    device = choose_device(args.device)
    systems = [parse_baseline(spec, args.reference_rate) for spec in args.baseline]
    if args.model or args.bandwidth or args.num_codebooks or not systems:  # with only --baseline, only those
        codec = _load_model(args.model or "bundled").to(device)
        choices = [(None, b) for b in args.bandwidth or []] + [(n, None) for n in args.num_codebooks or []]
        counts = [_num_codebooks(codec, n, b) for n, b in choices] or [codec.num_codebooks]
        systems = [ModelSystem(codec, num_codebooks=n, name=args.name) for n in counts] + systems
    check_systems(systems, Path(args.out), args.force)
    chosen = table.choose(args.metrics, args.mos, args.no_mos)
    settings = table.Settings(device=str(device), utmos_checkpoint=args.utmos_checkpoint)
    metrics, unavailable = table.load_scorers(chosen, settings)
    for message in unavailable.values():
        print(f"note: {message}", file=sys.stderr)
    if any(m.family == "asr" for m, _ in metrics):
        print(f"note: WER and CER against {text_source or 'the original audio’s PocketSphinx transcript (no text)'}"
              " (PocketSphinx: a weak recogniser, see docs/evaluation.md)", file=sys.stderr)
    data = args.data + (f", split {args.split}" if args.split else "") + (f", {len(files)} files" if args.subset else "")
    options = Options(reference_rate=args.reference_rate, metrics=metrics, unavailable=unavailable, texts=texts,
                      text_source=text_source, examples=args.examples, save_audio=args.save_audio, force=args.force,
                      data=data)
    skipped = 0
    for system in systems:
        results = evaluate(system, files, Path(args.out) / system.label, options)
        print(f"{system.label} over {results['files']} files ({results['audio_seconds'] / 60:.1f} min of audio, "
              f"{results['timing']['wall_seconds']:.0f} s):")
        for name, value in results["metrics"].items():
            print(f"  {name}: {value['mean']:.3f} +/- {value['ci95']:.3f}")
        if results["skipped"]:
            skipped += len(results["skipped"])
            print(f"  skipped {len(results['skipped'])} of {len(files)} files (listed in results.json)")
    if skipped:
        print(f"error: files were skipped ({skipped} in all; listed under 'skipped' in each system's results.json)",
              file=sys.stderr)
    return EXIT_FAILURE if skipped else 0


def _check_output_folder(path: str) -> None:
    from .audio import check_folder
    check_folder(path, "--out")


def cmd_report(args) -> int:
    from .report import write_report
    _check_output_folder(args.out)
    page = write_report(args.results, args.out, args.examples, args.clip_seconds, args.force)
    print(f"wrote {page} and {page.parent / 'report.md'}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run
    report = run(args.model, tuple(args.sizes), args.threads, args.skip_peers, with_serving=args.serving)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


def cmd_export(args) -> int:
    from .corpus import data_root, read_utterances
    from .export import ExportConfig, export
    from .processes import choose_device
    _warn_if_single_process("export")
    utterances = read_utterances(args.data, args.split)
    codec = _load_model(args.model).to(choose_device(args.device))
    num_codebooks = _num_codebooks(codec, args.num_codebooks, args.bandwidth)
    config = ExportConfig(out=Path(args.out), num_codebooks=num_codebooks, shard_size=args.shard_size,
                          batch_size=args.batch_size, webdataset=args.webdataset, token_stream=args.token_stream,
                          strict=args.strict, force=args.force, data_root=data_root(args.data))
    manifest = export(codec, utterances, config)
    if manifest is not None:  # process 0 of several, or the only one
        print(f"exported {manifest['utterances']} utterances ({manifest['duration_hours']:.3g} h of audio) in "
              f"{len(manifest['shards'])} shards to {args.out}")
        if manifest["errors"]:
            print(f"warning: {manifest['errors']} files skipped, listed in {Path(args.out) / 'errors.tsv'}",
                  file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from .config import load_yaml
    from .train.config import TrainConfig
    from .train.runs import prepare
    from .train.trainer import train
    from .weights import weights_path
    _warn_if_single_process("train")
    overrides = args.overrides + ([f"threads={args.threads}"] if args.threads is not None else [])
    config = load_yaml(TrainConfig, args.config, overrides)
    init_weights = args.init_weights and str(weights_path(args.init_weights))
    prepare(config, args.resume, args.force, init_weights)
    if config.model.encoder == "world":  # nothing learns but the codebooks: fitted in one pass, not trained
        from .train.codebooks import fit_codebooks
        print(f"weights: {fit_codebooks(config)}")
        return 0
    print(f"weights: {train(config, init_weights)}")
    return 0


def cmd_export_weights(args) -> int:
    from .config import load_yaml
    from .train.config import TrainConfig
    from .train.runs import export_weights
    model = load_yaml(TrainConfig, args.config).model if args.config else None
    path, step = export_weights(args.source, args.out, args.raw, args.force, model=model)
    print(f"wrote {path}: {'raw' if args.raw else 'EMA'} weights of step {step}")
    return 0


def cmd_onnx(args) -> int:
    from .audio import check_folder
    from .onnx import export_onnx
    check_folder(args.out, "the ONNX output")  # before the model loads
    paths = export_onnx(_load_model(args.model), args.out, force=args.force)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


# Options that several commands share, each declared once.
def _model_option(parser, default: str | None = "bundled",
                  text: str = "weights file (.safetensors) or a shipped model: bundled (the default) or world") -> None:
    parser.add_argument("--model", default=default, help=text)


def _force_option(parser, text: str = "overwrite existing outputs") -> None:
    parser.add_argument("--force", action="store_true", help=text)


def _rate_options(parser, several: bool = False) -> None:
    rate = parser.add_mutually_exclusive_group()
    if several:
        rate.add_argument("--bandwidth", type=float, nargs="+", help="target kbps, one run each (e.g. 1.5 3 6)")
        rate.add_argument("--num-codebooks", type=int, nargs="+", help="numbers of codebooks, one run each")
    else:
        rate.add_argument("--bandwidth", type=float, help="target kbps: the most codebooks that fit")
        rate.add_argument("--num-codebooks", type=int, help="number of codebooks to keep")


def _data_options(parser, text: str) -> None:
    parser.add_argument("--data", required=True, help=text)
    parser.add_argument("--split", help="keep manifest rows whose 'split' column has this value")


def _device_option(parser, text: str) -> None:
    parser.add_argument("--device", help=text)


def _threads_option(parser) -> None:
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for this process (default: 2, or "
                        "fewer where fewer cores are allowed; see docs/hardening.md)")


def _use_threads(count: int | None) -> None:
    """torch's threads for this process: `count`; else OMP_NUM_THREADS where set (`accelerate launch` and
    `torchrun` set 1 per process); else THREADS_DEFAULT where the process may use that many cores (a container or
    `taskset` may allow fewer than the machine has; see docs/hardening.md)."""
    import torch
    if count is not None and count < 1:
        raise CodecError(f"--threads must be at least 1, got {count}")
    if count is None and os.environ.get("OMP_NUM_THREADS"):
        return  # torch follows it already
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(count or min(THREADS_DEFAULT, cores))


def _launch_commands(command: str) -> str:
    """How to run `codec command` as N processes: one spelling, `-m codec VERB`, for every such verb."""
    return (f"`accelerate launch --multi_gpu --num_processes N -m codec {command} ...` or `torchrun "
            f"--nproc_per_node N -m codec {command} ...`")


def _warn_if_single_process(command: str) -> None:
    """Warn when `accelerate launch` ran `command` as one process although it looks like several were wanted:
    without --multi_gpu it starts one process on a machine with fewer than two GPUs, whatever --num_processes says
    (and it tells the process nothing of the count; its single-process launcher is the one that sets
    ACCELERATE_USE_CPU)."""
    if "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
        print(f"warning: accelerate launch started this {command} as a single process; for N processes on CPUs (or "
              f"on one GPU) use {_launch_commands(command)}", file=sys.stderr)


def _launch_note(command: str) -> str:
    return (f"To split the work over N processes, run {_launch_commands(command)} (--multi_gpu on CPUs too: "
            f"without it accelerate starts one process).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codec", description="Neural audio codec: audio <-> discrete codes.")
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="audio -> .codes",
                                 description="codec encode IN OUT.codes | codec encode IN... OUT_FOLDER")
    encode.add_argument("paths", nargs="+", metavar="PATH", help="inputs (files or folders), then the output")
    _model_option(encode)
    _force_option(encode)
    _threads_option(encode)
    _rate_options(encode)
    encode.set_defaults(run=cmd_encode)

    decode = commands.add_parser("decode", help=".codes -> audio",
                                 description="codec decode IN.codes OUT.wav | codec decode IN... OUT_FOLDER")
    decode.add_argument("paths", nargs="+", metavar="PATH", help="inputs (.codes files or folders), then the output")
    _model_option(decode)
    _force_option(decode)
    _threads_option(decode)
    decode.set_defaults(run=cmd_decode)

    evaluation = commands.add_parser(
        "eval", help="encode + decode a set of files with a model and/or baselines, and score them",
        description="Writes one folder per system (model at each bitrate, each baseline) under --out: "
                    "results.json, per_file.csv, per_file.json, summary.csv, examples/; `codec report` turns them "
                    "into a page. Exit code 1 if any file was skipped (listed in results.json).")
    _model_option(evaluation, None, "weights file or 'bundled' (the default, unless only --baseline is given)")
    evaluation.add_argument("--name", help="the model's name in results folders and reports (default: its own "
                                           "name; give one to compare two runs of the same recipe)")
    _data_options(evaluation, "folder, list of paths, or TSV/CSV manifest")
    evaluation.add_argument("--subset", type=int, help="only N files, spread evenly over the list")
    evaluation.add_argument("--out", required=True, help="parent folder of the results folders")
    _rate_options(evaluation, several=True)
    evaluation.add_argument("--baseline", action="extend", nargs="+", default=[], metavar="SPEC",
                            help="also run classic codecs: opus:KBPS, codec2:MODE (3200, 1200, ...) or original "
                                 "(the reference itself); several after one flag, or the flag repeated")
    # Names are checked against the metric table when eval runs, so that the other verbs never load it.
    evaluation.add_argument("--metrics", nargs="+", metavar="METRIC",
                            help="metrics or families to compute (default: all; an unavailable one is reported as "
                                 "such, with what to install); `python -m codec.metrics.table` lists them")
    evaluation.add_argument("--mos", nargs="+", metavar="PREDICTOR",
                            help="MOS predictors (default: every one in the metric table: utmos, distillmos)")
    evaluation.add_argument("--no-mos", action="store_true", help="skip the MOS predictors")
    evaluation.add_argument("--text-column", help="manifest column holding what each file says, WER's reference "
                                                  "(default: 'text' where every file has one; without a text, "
                                                  "the original audio's transcript)")
    evaluation.add_argument("--utmos-checkpoint", help="utmos22_strong_step7459_v1.pt (or set "
                                                       "CODEC_UTMOS_CHECKPOINT); nothing is downloaded")
    evaluation.add_argument("--reference-rate", type=int, default=24000,
                            help="rate every system's output is compared at (default 24000)")
    evaluation.add_argument("--examples", type=int, default=3, help="original/decoded pairs kept for the report")
    evaluation.add_argument("--save-audio", action="store_true",
                            help="also write every decoded file as scored (audio/): aligned to the reference, at "
                                 "the reference rate")
    _device_option(evaluation, "where the model and the MOS predictors run (cpu, cuda, cuda:1, ...; default: a GPU "
                               "when present, else cpu)")
    _force_option(evaluation, "overwrite existing results")
    _threads_option(evaluation)
    evaluation.set_defaults(run=cmd_eval)

    report = commands.add_parser("report", help="results folders -> one HTML page (and Markdown)",
                                 description="codec report results/* --out report/")
    report.add_argument("results", nargs="+", help="results folders, or folders holding them")
    report.add_argument("--out", required=True, help="folder for index.html and report.md")
    report.add_argument("--examples", type=int, default=2, help="audio examples to embed (default 2)")
    report.add_argument("--clip-seconds", type=float, default=6.0, help="length of each embedded clip")
    _force_option(report, "overwrite an existing report")
    report.set_defaults(run=cmd_report)

    bench = commands.add_parser("bench", help="speed and memory benchmarks against peers")
    _model_option(bench)
    bench.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536, 262144],
                       help="codebook sizes of the SimVQ step timings (default 4096 65536 262144)")
    bench.add_argument("--threads", type=int, default=2, help="torch threads of every timing (default 2)")
    bench.add_argument("--skip-peers", action="store_true", help="do not run vector-quantize-pytorch / EnCodec")
    bench.add_argument("--serving", action="store_true",
                       help="also time batched against one-by-one encoding and 16 streams stepped together")
    bench.add_argument("--out", help="also write the Markdown table here")
    bench.set_defaults(run=cmd_bench)

    export = commands.add_parser("export", help="encode a corpus into token shards for speech language models",
                                 description="Parquet shards (+ WebDataset tars, + a flat token stream) and a "
                                             f"manifest.json; resumable. {_launch_note('export')}")
    _model_option(export)
    _data_options(export, "folder (recursive, LibriTTS-aware) or JSONL/CSV/TSV manifest")
    export.add_argument("--out", required=True, help="output folder; run the same command again to resume")
    _rate_options(export)
    export.add_argument("--shard-size", type=int, default=1000, help="utterances per shard (default 1000)")
    export.add_argument("--batch-size", type=int, default=8, help="utterances encoded at once (default 8)")
    export.add_argument("--webdataset", action="store_true", help="also write WebDataset .tar shards")
    export.add_argument("--token-stream", action="store_true", help="also write a flat token stream (.bin + index)")
    export.add_argument("--strict", action="store_true", help="stop at the first bad file instead of skipping it")
    _force_option(export, "start over in a folder holding another export")
    _device_option(export, "default: cuda:LOCAL_RANK when a GPU is present, else cpu")
    _threads_option(export)
    export.set_defaults(run=cmd_export)

    train = commands.add_parser(
        "train", help="train a model from a YAML config (see recipes/)",
        description="Trains into the config's out_dir: checkpoints/, logs/ (TensorBoard), weights.safetensors. "
                    "A folder holding an earlier run is refused unless --resume or --force. "
                    f"{_launch_note('train')}")
    train.add_argument("--config", required=True, help="training YAML (see recipes/)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="e.g. data.train=my_audio/ steps=1000 data.batch_size=4")
    train.add_argument("--resume", action="store_true", help="continue the run in out_dir from its latest checkpoint")
    _force_option(train, "delete the run in out_dir and start over")
    train.add_argument("--init-weights", metavar="WEIGHTS_OR_RUN",
                       help="start a new run from a weights file ('bundled': the shipped model) for the generator, "
                            "or from another run folder or checkpoint (its EMA generator, and its discriminators "
                            "where this run has the same)")
    train.add_argument("--threads", type=int, metavar="N",
                       help="CPU threads per process (default: the config's `threads`; see docs/hardening.md)")
    train.set_defaults(run=cmd_train)

    export_weights = commands.add_parser(
        "export-weights", help="training checkpoint -> inference weights file",
        description="codec export-weights RUN_DIR_OR_CHECKPOINT OUT.safetensors: the EMA weights of the run's "
                    "latest checkpoint (or of the checkpoint given), loadable with codec.load and --model.")
    export_weights.add_argument("source", help="a run folder (its latest checkpoint) or a checkpoint folder")
    export_weights.add_argument("out", help="weights file to write (.safetensors)")
    export_weights.add_argument("--raw", action="store_true", help="the raw generator weights instead of the EMA")
    export_weights.add_argument("--config", help="training YAML whose model the checkpoint holds (default: read "
                                                 "from the run's weights.safetensors)")
    _force_option(export_weights, "overwrite an existing file")
    export_weights.set_defaults(run=cmd_export_weights)

    onnx = commands.add_parser(
        "onnx", help="model -> ONNX graphs (encoder, decoder, offline and streaming)",
        description="codec onnx MODEL OUT_DIR: write encoder.onnx, decoder.onnx, encoder_streaming.onnx and "
                    "decoder_streaming.onnx (state as explicit inputs and outputs) with the model's metadata; "
                    "MODEL is a weights file or 'bundled' (docs/serving.md)")
    onnx.add_argument("model", help="weights file (.safetensors) or 'bundled'")
    onnx.add_argument("out", help="output folder")
    _force_option(onnx, "overwrite existing graphs")
    onnx.set_defaults(run=cmd_onnx)

    info = commands.add_parser("info", help="what is inside a .codes file")
    info.add_argument("files", nargs="+", metavar="FILE", help=".codes files")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "overrides", None) is not None:  # `codec train --config C --resume steps=10`: after an option
        args.overrides += [item for item in extra if "=" in item and not item.startswith("-")]
        extra = [item for item in extra if item not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "paths", None) is not None and len(args.paths) < 2:
        parser.error(f"{args.command} needs at least one input and an output")
    try:
        with _signals_raise():
            if args.command in ("encode", "decode", "eval", "export"):
                _use_threads(args.threads)
            return args.run(args)
    except CodecError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)  # one line, whatever names it quotes
        return EXIT_FAILURE
    except KeyboardInterrupt as stop:
        print(f"error: interrupted{f' ({stop})' if isinstance(stop, Stopped) else ''}", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)  # the shell's convention: 130 for Ctrl-C, 143 for TERM


if __name__ == "__main__":
    sys.exit(main())
