"""Intelligibility: word and character error rates (%) of what a speech recogniser hears in the decoded audio.

The recogniser is CMU PocketSphinx (`pocketsphinx` on PyPI: its wheel carries the US-English acoustic model,
dictionary and language model, so nothing is downloaded). It is a weak recogniser, far from Whisper: its absolute
error rates are high and do not compare with papers that use Whisper, but two systems scored on the same files
compare, and so does a system with the original (its row is the ceiling).

The reference is the data's text where it has one (`codec eval --text-column`); otherwise it is PocketSphinx's
transcript of the original audio, so the `original` row is 0 by construction and a system's WER says how much
of what the recogniser understood in the original it still understands in the decoded audio.

Text normalisation, the same for both sides before `jiwer` counts errors: lower case; every character that is not
a letter, a digit or an apostrophe inside a word becomes a space (hyphenated words split, punctuation goes);
runs of spaces collapse. Numbers are not spelled out: give the text column in words (LibriTTS's normalised text
is). CER counts characters of the normalised words joined by single spaces.
"""
from __future__ import annotations

import re

import numpy as np

from .quality import Pair

ASR_RATE = 16000
INSTALL = "pip install pocketsphinx jiwer"
_NOT_WORD = re.compile(r"[^\w']+|(?<!\w)'|'(?!\w)|_")


def normalise(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def transcribe(audio: np.ndarray) -> str:
    """Mono float audio at 16 kHz -> PocketSphinx's best hypothesis ("" for nothing recognised)."""
    from pocketsphinx import Decoder
    # A fresh decoder per utterance (0.2 s): one kept across utterances carries state from the last one, so the
    # same audio could be heard differently after different files and the original's WER would not be 0.
    decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def transcript(pair: Pair, side: str) -> str:
    return pair.cached("transcript", side, ASR_RATE, transcribe)


def reference_text(pair: Pair) -> str:
    return pair.text if pair.text is not None else transcript(pair, "reference")


def error_rate(reference: str, hypothesis: str, unit: str) -> float:
    """WER ("word") or CER ("char") in %, after `normalise`; NaN when the reference has no words (no rate is
    defined: nothing was said, or nothing was recognised in the original)."""
    import jiwer
    reference, hypothesis = normalise(reference), normalise(hypothesis)
    if not reference:
        return float("nan")
    measure = jiwer.wer if unit == "word" else jiwer.cer
    return 100 * float(measure(reference, hypothesis))


def wer(pair: Pair) -> float:
    return error_rate(reference_text(pair), transcript(pair, "decoded"), "word")


def cer(pair: Pair) -> float:
    return error_rate(reference_text(pair), transcript(pair, "decoded"), "char")


def original_error_rates(pair: Pair) -> dict[str, float]:
    """The original audio's own WER and CER against the text: the ceiling any system can reach."""
    heard = transcript(pair, "reference")
    return {"wer": error_rate(pair.text or "", heard, "word"), "cer": error_rate(pair.text or "", heard, "char")}
