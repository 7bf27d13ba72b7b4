"""Reading, checking, resampling and writing audio, and where outputs go (checked, written atomically, paired
with their inputs for folders). The one place where audio enters or leaves the toolkit.

Channel policy: the codec is mono. Multi-channel input is downmixed by averaging the channels (a stereo file
becomes one stream of codes); the .codes file records how many channels the source had.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from .errors import AudioError, CodecError, OutputError

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64"}


def resample(audio: torch.Tensor | np.ndarray, source_rate: int, target_rate: int) -> torch.Tensor:
    """Resample (T,) or (C, T) with soxr's high-quality filter."""
    array = np.asarray(audio, dtype=np.float32)
    if source_rate == target_rate:
        return torch.from_numpy(array.copy())
    out = soxr.resample(array.T, source_rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T, dtype=np.float32))


def check_samples(audio: np.ndarray | torch.Tensor, source: str) -> None:
    if audio.shape[-1] == 0:
        raise AudioError(f"{source}: the audio is empty")
    if not np.isfinite(np.asarray(audio)).all():
        raise AudioError(f"{source}: the audio contains NaN or infinite samples")


def info(path: str | Path) -> soundfile._SoundFileInfo:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise AudioError(f"{path}: broken symbolic link (to {os.readlink(path)})")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.is_file():  # opening a FIFO would wait for a writer forever
        raise AudioError(f"{path}: not a regular file (a FIFO, socket or device)")
    try:
        return soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: not a readable audio file ({str(error).splitlines()[0]})") from None


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[torch.Tensor, int, int]:
    """Read a whole file as mono float32 (T,), resampled to `sample_rate` if given.

    Returns (audio, rate, source channel count). Long files should go through `blocks` instead.
    """
    meta = info(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot decode audio ({str(error).splitlines()[0]})") from None
    mono = data.mean(axis=1)
    check_samples(mono, str(path))
    audio = resample(mono, rate, sample_rate) if sample_rate else torch.from_numpy(mono)
    return audio, sample_rate or rate, meta.channels


def blocks(path: str | Path, sample_rate: int, block_seconds: float = 10.0):
    """Yield mono float32 blocks of a file at `sample_rate`, reading and resampling incrementally.

    Memory stays bounded by the block size whatever the file's length. Raises AudioError on NaN/inf or empty.
    """
    meta = info(path)
    resampler = soxr.ResampleStream(meta.samplerate, sample_rate, 1, dtype="float32", quality="HQ") \
        if meta.samplerate != sample_rate else None
    total = 0
    try:
        with soundfile.SoundFile(str(path)) as handle, tempfile.TemporaryFile() as messages:
            while True:
                with _c_stderr_to(messages):
                    block = handle.read(int(block_seconds * meta.samplerate), dtype="float32", always_2d=True)
                if not len(block):
                    break
                mono = np.ascontiguousarray(block.mean(axis=1))
                if not np.isfinite(mono).all():
                    raise AudioError(f"{path}: the audio contains NaN or infinite samples")
                total += len(mono)
                out = resampler.resample_chunk(mono) if resampler else mono
                if len(out):
                    yield torch.from_numpy(out.copy())
            if resampler:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if len(tail):
                    yield torch.from_numpy(tail.copy())
            _note_messages(path, messages)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot decode audio ({str(error).splitlines()[0]})") from None
    if total == 0:
        raise AudioError(f"{path}: the audio is empty")


@contextlib.contextmanager
def _c_stderr_to(sink):
    """Point file descriptor 2 at `sink` while reading: libsndfile's mp3 decoder (libmpg123) writes a line to the
    C stderr for every damaged frame it conceals (19 lines for one damaged 2 s clip), out of Python's reach."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _note_messages(path: str | Path, messages) -> None:
    """The decoder concealed damage and decoding went on: say so in one line (tqdm.write: above any bar)."""
    if messages.tell():
        from tqdm import tqdm
        messages.seek(0)
        lines = messages.read().decode(errors="replace").splitlines()
        tqdm.write(f"note: {path}: the decoder concealed damaged data (messages: {len(lines)}; the first: "
                   f"{lines[0].strip()})", file=sys.stderr)


def list_audio(paths: list[str | Path], suffixes: set[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of the files with one of `suffixes` (audio,
    unless asked for others: `codec decode` lists .codes files so).

    Symbolic links to folders are followed, except one back to a folder above it (a cycle). Everything with an
    audio suffix is listed, broken links and FIFOs included, so that reading it reports the problem (`info`)
    instead of the file vanishing from the list.
    """
    found: list[Path] = []
    for entry in map(Path, paths):
        found += sorted(_scan(entry, frozenset({entry.resolve()}), suffixes)) if entry.is_dir() else [entry]
    return found


def _scan(folder: Path, above: frozenset[Path], suffixes: set[str]):
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        raise AudioError(f"{folder}: cannot list the folder ({error.strerror})") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():  # a link to a folder too
            real = path.resolve()
            if real not in above:  # a link to a folder above: its files are being listed already
                yield from _scan(path, above | {real}, suffixes)
        elif path.suffix.lower() in suffixes:
            yield path


def _check_place(path: Path, force: bool) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists (use --force to overwrite)")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{path}: {path.parent} is not a folder")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: folder {path.parent} does not exist")


def check_output_file(path: str | Path, force: bool = False) -> None:
    """Raise the OutputError that AtomicOutput(path, force) would, without leaving anything behind: for a
    command to refuse its output before the work (minutes of encoding), not after it."""
    path = Path(path)
    _check_place(path, force)
    try:  # only a write tells: root passes every permission test, and /proc or a read-only mount still refuse
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror})") from None


def check_folder(path: str | Path, what: str = "the output") -> None:
    """Refuse, before the work, an output folder (named `what`: an option, a setting) that could not be made or
    written into: evaluation and training otherwise failed at their first write, an hour in. Creates nothing:
    the nearest existing folder above it must take a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: {what} must be a folder, and this is a file")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot make {what} ({existing} is a file)")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise OutputError(f"{path}: cannot write {what} ({existing}: {error.strerror})") from None


# Temporary files are named .NAME.HOST-PID.RANDOM.tmp.SUFFIX: one whose process is gone (a SIGKILL, a power cut)
# is removed by the next AtomicOutput in its folder. Only this host's: a shared folder may hold another
# machine's files in progress, under process ids that mean nothing here.
_HOST = "".join(c if c.isascii() and c.isalnum() else "-" for c in socket.gethostname())[:40]
_TEMPORARY = re.compile(r"\..+\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp(\.[^.]*)?")
_swept: set[Path] = set()


def _remove_stale_temporaries(folder: Path) -> None:
    """Once per folder and process (a folder of 10,000 outputs is listed once, not 10,000 times)."""
    if folder in _swept or not folder.is_dir():
        return
    _swept.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match["host"] == _HOST and not _running(int(match["pid"])) and entry.is_file():
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no such number: leave its files
        pass
    return True


class AtomicOutput:
    """A temporary file beside `path`, renamed onto it on success and removed on failure.

    Refuses an existing `path` unless `force`; a missing or unwritable folder is an OutputError (`check_output_file`
    asks the same in advance). The temporary file is removed on any exception: the command line turns SIGTERM
    and SIGHUP into one, so that a killed command leaves nothing either.
    """

    def __init__(self, path: str | Path, force: bool = False) -> None:
        self.path = Path(path)
        _check_place(self.path, force)
        _remove_stale_temporaries(self.path.parent)
        try:
            handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.{_HOST}-{os.getpid()}.",
                                            suffix=".tmp" + self.path.suffix, dir=self.path.parent)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write ({error.strerror})") from None
        os.close(handle)
        self.temporary = Path(name)

    def __enter__(self) -> Path:
        return self.temporary

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


# Output formats by extension: (libsndfile format, subtype). WAV and FLAC are 16-bit PCM; OGG is Vorbis.
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) for an output path, or an OutputError naming the extensions that can be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise OutputError(f"{path}: cannot write '{suffix or 'no extension'}' audio; "
                          f"use {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def save(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int, force: bool = False) -> None:
    """Write mono audio in the format its extension names (see OUTPUT_FORMATS), atomically."""
    array = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.isfinite(array).all():  # PCM has no NaN: it would be written as full-scale noise
        raise AudioError(f"{path}: the audio to write contains NaN or infinite samples; nothing was written")
    array = np.clip(array, -1.0, 1.0)
    kind, subtype = output_format(path)
    with AtomicOutput(path, force) as temporary:
        soundfile.write(str(temporary), array, sample_rate, subtype=subtype, format=kind)


def pair_outputs(inputs: list[str], output: str, suffix: str,
                 input_suffixes: set[str]) -> tuple[list[tuple[Path, Path]], bool]:
    """Map inputs to outputs; returns (pairs, folder_mode). One file in: `output` is the file. Several inputs or
    a folder: `output` is a folder and each output keeps the input's path relative to the folder it came from,
    with a new suffix; folders are searched for files with `input_suffixes`."""
    sources = [Path(p) for p in inputs]
    if len(sources) == 1 and not sources[0].is_dir():
        return [(sources[0], Path(output))], False
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: several inputs or a folder need an output folder, and this is a file")
    if not out.exists() and out.suffix.lower() in AUDIO_EXTENSIONS | input_suffixes | {suffix}:  # x.codes/: a slip
        raise OutputError(f"{out}: several inputs or a folder need an output folder, and this names a file")
    pairs = []
    for source in sources:
        if source.is_dir():
            files = list_audio([source], input_suffixes)
            pairs += [(f, out / f.relative_to(source).with_suffix(suffix)) for f in files]
        else:
            pairs.append((source, out / source.with_suffix(suffix).name))
    if not pairs:
        raise CodecError(f"no input files found in {', '.join(inputs)}")
    sources_of: dict[Path, Path] = {}
    for source, target in pairs:
        if target in sources_of:
            raise CodecError(f"{sources_of[target]} and {source} would both write {target}; "
                             f"give them separate folders or runs")
        sources_of[target] = source
    return pairs, True


def make_output_folders(pairs: list[tuple[Path, Path]], folder_mode: bool) -> None:
    for folder in sorted({target.parent for _, target in pairs} if folder_mode else ()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{folder}: cannot create the output folder ({error.strerror})") from None
