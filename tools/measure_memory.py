"""Peak RSS of `codec encode` and `codec decode` against the length of the file (docs/hardening.md).

    python tools/measure_memory.py [--minutes 0.5 30] [--threads 1]

Noise files at 24 kHz; each command runs under /usr/bin/time, which reports the peak resident set of the
process. Prints a Markdown table.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile


def peak_mib(command: list[str]) -> float:
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *command], check=True, capture_output=True, text=True)
    return int(result.stderr.strip().splitlines()[-1]) / 1024  # kilobytes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.5, 30.0])
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    print("| audio | encode peak RSS | decode peak RSS |\n|---|---|---|")
    for minutes in args.minutes:
        audio = folder / "a.wav"
        with soundfile.SoundFile(audio, "w", 24000, 1) as handle:  # written a minute at a time: bounded here too
            rng = np.random.default_rng(0)
            for _ in range(int(minutes)):
                handle.write(rng.standard_normal(24000 * 60) * 0.1)
            handle.write(rng.standard_normal(int(24000 * 60 * (minutes % 1))) * 0.1)
        codec = [sys.executable, "-m", "codec"]
        encode = peak_mib(codec + ["encode", str(audio), str(folder / "a.codes"), "--force", "--threads", args.threads])
        decode = peak_mib(codec + ["decode", str(folder / "a.codes"), str(folder / "b.wav"), "--force", "--threads",
                                   args.threads])
        print(f"| {minutes:g} min | {encode:.0f} MiB | {decode:.0f} MiB |", flush=True)
