"""Render a `codec report` page in a real browser (headless Chromium) and check that it drew something.

    python tools/screenshot_report.py report/index.html --out report.png

Chromium comes from Debian (`apt-get install chromium`). The check is deliberately coarse: the screenshot must
exist and must not be a blank page, i.e. the tables and the embedded plots were rendered. Exit code 1 otherwise.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 2000, timeout: float = 120) -> None:
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="codec-chromium-") as profile:
        # No network, no updates, no sync: the page is self-contained and the check must not reach out.
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={profile}", f"--screenshot={out.resolve()}",
                        f"--window-size={width},{height}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)


def drawn_fraction(png: Path) -> float:
    """Share of pixels that are not page background (white)."""
    import matplotlib.image
    pixels = matplotlib.image.imread(png)[..., :3]
    return float((pixels.min(axis=-1) < 0.95).mean())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    args = parser.parse_args()
    try:
        screenshot(args.page, args.out)
    except (RuntimeError, subprocess.SubprocessError) as error:
        sys.exit(f"error: {error}")
    fraction = drawn_fraction(args.out)
    print(f"{args.out}: {100 * fraction:.1f} % of the pixels drawn")
    sys.exit(0 if fraction > 0.02 else 1)
