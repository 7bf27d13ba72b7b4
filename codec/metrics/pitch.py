"""Intonation: how well the decoded audio keeps the original's pitch contour, from WORLD's Harvest F0 estimator
(the `pyworld` module; installed from the `pyworld-prebuilt` wheel, the same WORLD code built for current
Pythons, where `pyworld` itself is a source package that needs a compiler and setuptools' removed pkg_resources)
run on both signals at 16 kHz with a 10 ms frame period, so frame i of one is frame i of the other.

- F0 RMSE (cents): root mean square of 1200 log2(F0 decoded / F0 reference) over the frames voiced in both.
  A system that shifts every pitch by an octave scores 1200.
- Voicing decision error (%): the share of all frames that one signal has voiced and the other unvoiced.
- Octave errors (%): the share of the frames voiced in both whose pitch is off by more than half an octave
  (600 cents), i.e. nearer to another octave than to the right pitch: the doubling and halving errors of
  vocoders and codecs. These frames are also in the RMSE, which they dominate.
Harvest's range is its default, 71 to 800 Hz. A file with no frame voiced in both has no RMSE or octave share
(NaN, left out of the means).
"""
from __future__ import annotations

import numpy as np

from .quality import Pair

PITCH_RATE = 16000
FRAME_MS = 10.0
OCTAVE_ERROR_CENTS = 600.0
INSTALL = "pip install pyworld-prebuilt"


def f0(audio: np.ndarray) -> np.ndarray:
    """Harvest's F0 per 10 ms frame in Hz, 0 where unvoiced."""
    import pyworld
    contour, _ = pyworld.harvest(np.ascontiguousarray(audio, dtype=np.float64), PITCH_RATE, frame_period=FRAME_MS)
    return contour


def contours(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    reference = pair.cached("f0", "reference", PITCH_RATE, f0)
    decoded = pair.cached("f0", "decoded", PITCH_RATE, f0)
    frames = min(len(reference), len(decoded))
    return reference[:frames], decoded[:frames]


def _deviation_cents(pair: Pair) -> np.ndarray:
    reference, decoded = contours(pair)
    both = (reference > 0) & (decoded > 0)
    return 1200 * np.log2(decoded[both] / reference[both])


def f0_rmse_cents(pair: Pair) -> float:
    cents = _deviation_cents(pair)
    return float(np.sqrt(np.mean(cents ** 2))) if cents.size else float("nan")


def octave_error_share(pair: Pair) -> float:
    cents = _deviation_cents(pair)
    return float(100 * np.mean(np.abs(cents) > OCTAVE_ERROR_CENTS)) if cents.size else float("nan")


def voicing_error(pair: Pair) -> float:
    reference, decoded = contours(pair)
    return float(100 * np.mean((reference > 0) != (decoded > 0)))
