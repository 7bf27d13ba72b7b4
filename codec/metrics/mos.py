"""No-reference MOS predictors, loaded for the metric table (`table.py`).

Each predictor takes mono audio at 16 kHz (the rate both were trained at; `quality.Pair.at` provides it) and
returns one score per file. They are reported under their own names: `utmos` only ever means UTMOS22 strong.
"""
from __future__ import annotations

from typing import Callable

from .quality import Pair

MOS_RATE = 16000


def utmos(device: str, checkpoint) -> Callable[[Pair], float]:
    """UTMOS22 strong from the user's checkpoint: unavailable when none is found, an error when the one named or
    found does not load."""
    from .utmos import UTMOS
    predictor = UTMOS(checkpoint, device)
    return lambda pair: predictor(pair.at(MOS_RATE)[1])


def distillmos(device: str) -> Callable[[Pair], float]:
    from .distillmos import DistillMOS
    predictor = DistillMOS(device)
    return lambda pair: predictor(pair.at(MOS_RATE)[1])
