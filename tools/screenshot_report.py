"""Render a `codec report` page in a real browser (headless Chromium) and check what it shows.

    python tools/screenshot_report.py report/index.html --out report.png

Chromium comes from Debian (`apt-get install chromium`). Two checks, exit code 1 if either fails:
  - every embedded medium loaded: each <img> decoded (naturalWidth > 0) and each <audio> source loaded its
    metadata, as reported by a small script run in a copy of the page (a blank-pixel count alone passes a page
    whose PNGs are garbage: the tables still draw);
  - the screenshot is not a blank page (more than 2 % of its pixels drawn).
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# No network, no updates, no sync, no GPU: the page is self-contained and the check must not reach out.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
MARKER = "codec-media-check"
# Appended to the copy of the page: waits for the page to load and each player to load or fail, then writes
# what it found into the DOM, where --dump-dom prints it.
MEDIA_CHECK = """<script>
(async () => {
  await new Promise(done => document.readyState === "complete" ? done() : addEventListener("load", done));
  const images = [...document.images].map((image, i) => ({name: image.alt || `image ${i + 1}`,
                                                          ok: image.complete && image.naturalWidth > 0}));
  const audio = await Promise.all([...document.querySelectorAll("audio")].map((player, i) => new Promise(done => {
    const report = ok => done({name: `audio player ${i + 1}`, ok});
    if (player.error) return report(false);
    if (player.readyState >= 1) return report(true);
    player.addEventListener("loadedmetadata", () => report(true));
    player.addEventListener("error", () => report(false));
    player.load();
  })));
  const marker = document.createElement("pre");
  marker.id = "%s";
  marker.textContent = JSON.stringify({images, audio});
  document.body.append(marker);
})();
</script>""" % MARKER


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _browser(arguments: list[str], page: Path, timeout: float) -> str:
    """Run Chromium on `page` with a fresh profile; its standard output."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="codec-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *arguments, page.resolve().as_uri()],
                              check=True, capture_output=True, text=True, timeout=timeout).stdout


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 2000, timeout: float = 120) -> None:
    _browser([f"--screenshot={out.resolve()}", f"--window-size={width},{height}"], page, timeout)


def media_status(page: Path, timeout: float = 120) -> dict[str, list[dict]]:
    """{"images": [{name, ok}], "audio": [{name, ok}]} as the browser loaded them, from a temporary copy of the
    page with MEDIA_CHECK appended."""
    text = page.read_text(encoding="utf-8")
    head, body_end, tail = text.rpartition("</body>")
    checked = head + MEDIA_CHECK + body_end + tail if body_end else text + MEDIA_CHECK
    with tempfile.TemporaryDirectory(prefix="codec-media-check-") as folder:
        copy = Path(folder) / page.name
        copy.write_text(checked, encoding="utf-8")
        # Virtual time runs the page's timers and loads without waiting on the wall clock, then the DOM is dumped.
        dom = _browser(["--dump-dom", "--virtual-time-budget=30000"], copy, timeout)
    found = re.search(f'<pre id="{MARKER}">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError(f"{page}: the media check did not finish in the browser")
    return json.loads(html.unescape(found.group(1)))


def broken(status: dict[str, list[dict]]) -> list[str]:
    """The names of the images that did not decode and of the players whose audio did not load."""
    return [item["name"] for kind in ("images", "audio") for item in status[kind] if not item["ok"]]


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
        status = media_status(args.page)
        screenshot(args.page, args.out)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        sys.exit(f"error: {error}")
    failed = broken(status)
    fraction = drawn_fraction(args.out)
    print(f"{args.page}: {len(status['images'])} images, {len(status['audio'])} audio players, "
          f"{len(failed)} did not load{': ' + ', '.join(failed) if failed else ''}")
    print(f"{args.out}: {100 * fraction:.1f} % of the pixels drawn")
    sys.exit(0 if fraction > 0.02 and not failed else 1)
