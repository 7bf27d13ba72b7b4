"""Time `codec encode` of one file under thread settings and competing load (docs/busy-machines.md).

    python tools/measure_threads.py [--seconds 60] [--repeats 2]

For every load (none added; one `yes > /dev/null` process; another torch job of 2 threads) and every setting
(--threads 1 or 2; OMP_WAIT_POLICY empty, which leaves libgomp's own policy (spin a while, then sleep), or
PASSIVE, codec's default since it was measured so), the wall time of a `codec encode` subprocess, the median of
--repeats. Prints a Markdown table. Says nothing of how loaded the machine was before: report that beside it.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

HOG_TORCH = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\nwhile True: a @ a"
LOADS = {"none added": None, "1 core busy (yes)": ["yes"], "beside a 2-thread torch job": [sys.executable, "-c",
                                                                                             HOG_TORCH]}
# "": set, so codec keeps it, and invalid, so libgomp keeps its own policy (saying so on stderr, hidden below)
SETTINGS = [("1", ""), ("1", "PASSIVE"), ("2", ""), ("2", "PASSIVE")]


def encode_seconds(audio: Path, out: Path, threads: str, policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "codec", "encode", str(audio), str(out), "--force", "--threads", threads],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the (noise) file encoded")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the median is shown")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    audio = folder / "a.wav"
    soundfile.write(audio, np.random.default_rng(0).standard_normal(int(args.seconds * 24000)) * 0.1, 24000)
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()}")
    print("| load | " + " | ".join(f"{t} thread(s){', ' + p.lower() if p else ''}" for t, p in SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for name, command in LOADS.items():
        hog = command and subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            time.sleep(1 if hog else 0)
            cells = [statistics.median(encode_seconds(audio, folder / "a.codes", t, p) for _ in range(args.repeats))
                     for t, p in SETTINGS]
        finally:
            if hog:
                hog.kill()
                hog.wait()
        print(f"| {name} | " + " | ".join(f"{c:.1f} s" for c in cells) + " |", flush=True)
