"""The `codec` command: its parser, options and `main`; what each verb does is in `codec.commands`, a thin layer
over the Python API. Bad input is one line on stderr and exit code 1."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from .commands import (EXIT_FAILURE, cmd_bench, cmd_decode, cmd_encode, cmd_eval, cmd_export, cmd_export_weights,
                       cmd_info, cmd_onnx, cmd_report, cmd_train, launch_commands)
from .errors import CodecError, printable

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




# Options that several commands share, each declared once.
def _model_option(parser, default: str | None = "bundled",
                  text: str = "weights file (.safetensors) or a shipped model: bundled (the default; also "
                                     "called world) or low-latency") -> None:
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


def _launch_note(command: str) -> str:
    return (f"To split the work over N processes, run {launch_commands(command)} (--multi_gpu on CPUs too: "
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
    _model_option(evaluation, None, "weights file or a shipped model: 'bundled' (the default, unless only "
                                    "--baseline is given), 'low-latency'")
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
                       help="start a new run from a weights file (or a shipped model's name) for the generator, "
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
                    "decoder_streaming.onnx (state as explicit inputs and outputs; a refiner that reads frames "
                    "ahead: latents_streaming.onnx and synthesis_streaming.onnx) with the model's metadata; "
                    "MODEL is a weights file or a shipped model, e.g. 'low-latency' (docs/serving.md)")
    onnx.add_argument("model", help="weights file (.safetensors) or a shipped model's name")
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
