"""What each `codec` command does, given its parsed arguments (`codec.cli` builds the parser and runs one).
A command returns its exit code and raises CodecError for bad input; `codec.cli.main` prints that as one line."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import CodecError, printable

EXIT_FAILURE = 1


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
    data = args.data + (f", split {args.split}" if args.split else "")
    data += f", {len(files)} files" if args.subset else ""
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
    if config.model.encoder == "world":  # nothing learns but the codebooks and the refiner: fitted, not trained
        from .train.codebooks import fit_codebooks
        print(f"weights: {fit_codebooks(config, init_weights)}")
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


def launch_commands(command: str) -> str:
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
              f"on one GPU) use {launch_commands(command)}", file=sys.stderr)
