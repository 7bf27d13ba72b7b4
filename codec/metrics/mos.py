"""No-reference MOS predictors: the ones we have, and what to say when one cannot be loaded.

Each predictor takes mono audio at 16 kHz (the rate both were trained at; `quality.Pair.at` provides it) and
returns one score per file. They are reported under their own names: `utmos` only ever means UTMOS22 strong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import MetricUnavailable

MOS_RATE = 16000
NAMES = ("utmos", "distillmos")


class Predictor(Protocol):
    name: str

    def __call__(self, audio: np.ndarray) -> float: ...


def load_predictors(names: list[str], utmos_checkpoint: str | Path | None = None, device: str = "cpu"
                    ) -> tuple[list[Predictor], dict[str, str]]:
    """The predictors that can be loaded, on `device`, and for each one that is not installed, the message saying
    how to get it. One that is installed but broken (a UTMOS checkpoint that does not load) is an error."""
    from .distillmos import DistillMOS
    from .utmos import UTMOS
    builders: dict[str, Callable[[], Predictor]] = {"utmos": lambda: UTMOS(utmos_checkpoint, device),
                                                     "distillmos": lambda: DistillMOS(device)}
    predictors, unavailable = [], {}
    for name in names:
        try:
            predictors.append(builders[name]())
        except MetricUnavailable as error:
            unavailable[name] = str(error)
    return predictors, unavailable
