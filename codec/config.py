"""Typed configuration: dataclasses loaded from YAML or dicts. Unknown keys are an error naming key and source."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError


@dataclass
class SEANetConfig:
    limits: typing.ClassVar = {"n_filters": (1, None), "ratios": (1, None), "num_residual_layers": (0, None),
                               "lstm_layers": (0, None), "dimension": (1, None)}
    n_filters: int = 32
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    num_residual_layers: int = 1
    lstm_layers: int = 2
    dimension: int = 128
    # Normalise each latent frame over its channels (no learned scale): bounded latents cannot run away from
    # the codebook, which is what made early training collapse onto one code per stage.
    normalize_latents: bool = False
    # Standardise each latent channel with batch statistics (a BatchNorm without learned scale; running
    # statistics at inference, so streaming is unaffected): the codebooks see latents of a fixed spread however
    # the encoder drifts while it trains.
    standardize_latents: bool = False


@dataclass
class QuantizerConfig:
    limits: typing.ClassVar = {"codebook_size": (2, None), "num_codebooks": (1, None), "basis_dim": (1, None),
                               "code_dim": (1, None), "beta": (0, None), "search_beams": (1, None),
                               "search_frames": (1, None), "search_weights": (0, None)}
    kind: typing.Literal["simvq", "vq"] = "simvq"
    codebook_size: int = 1024
    num_codebooks: int = 8
    # SimVQ only; defaults to the latent dimension. A small basis (8 for 1024 codes) puts the codes in a low-
    # dimensional affine subspace of the latents, where they tile the space instead of a few hubs winning.
    basis_dim: int | None = None
    # Factorized codes: search in this many dimensions by angle (see quantize/factorized.py, and why a low-rank
    # `basis_dim` serves better); none: search in the full latent space.
    code_dim: int | None = None
    beta: float = 0.25
    seed: int = 0
    # Predict each frame from the previous quantized one and quantize only the difference (quantize/predictive.py).
    # For fitted codebooks (encoder: world), whose latents move slowly from frame to frame.
    prediction: bool = False
    # With prediction: the encoder keeps this many paths through stages and frames and picks the codes nearest over
    # each run of `search_frames` frames (a beam search; 1: the nearest code at each stage). The decoder is the same.
    # Entry i holds at i + 1 codebooks, the last entry at more: wide searches where few codebooks leave much to gain
    # and cost little, narrow ones where many codebooks would make encoding slow.
    search_beams: list[int] = field(default_factory=lambda: [1])
    search_frames: int = 150
    # What each latent dimension's squared error counts in a search over paths (empty: 1 each); one path takes
    # the nearest code by the fitted distance.
    search_weights: list[float] = field(default_factory=list)


@dataclass
class ISTFTDecoderConfig:
    """The frame-rate decoder (`nn/istft.py`): causal ConvNeXt blocks, then an inverse-STFT head."""
    limits: typing.ClassVar = {"dim": (1, None), "hidden_dim": (1, None), "num_layers": (0, None),
                               "n_fft": (2, None)}
    dim: int = 384
    hidden_dim: int = 1152
    num_layers: int = 8
    # A multiple of the hop. Frame f synthesises samples [f hop, f hop + n_fft), so n_fft - hop samples are a guess
    # ahead of what the causal encoder has heard; two hops (37.5 Hz bins at 24 kHz) keeps that guess short.
    n_fft: int = 640
    # absolute: each frame predicts its phase (Vocos). A stack of convolutions gives equal frames for equal
    # inputs, and equal frames repeat every hop: a comb at the frame rate (75 Hz), heard as buzz, unless the codes
    # carry each harmonic's phase. integrated: each frame predicts how far every bin's phase moves from the
    # previous frame (its deviation from the bin's own advance), and the head adds it up, as a phase vocoder does,
    # so a steady input makes steady sinusoids.
    phase: typing.Literal["absolute", "integrated"] = "absolute"


@dataclass
class HarmonicDecoderConfig:
    """The source-filter decoder (`nn/harmonic.py`): the ISTFT decoder's backbone, then f0, voicing and harmonic
    and noise envelopes that shape an oscillator's pulse train and noise, frame by frame in the STFT domain."""
    limits: typing.ClassVar = {"dim": (1, None), "hidden_dim": (1, None), "num_layers": (0, None),
                               "n_fft": (2, None), "f0_min": (1, None), "f0_max": (1, None),
                               "f0_bins": (2, None)}
    dim: int = 384
    hidden_dim: int = 1152
    num_layers: int = 8
    n_fft: int = 640                # a multiple of the hop, as for `istft`
    f0_min: float = 50.0            # Hz: the predicted f0 lies between these, on a log scale
    f0_max: float = 500.0
    # The f0 head classifies among this many log-spaced values between f0_min and f0_max (200: 20 cents apart over
    # 50-500 Hz), trained by cross-entropy against a 25-cent Gaussian round the label
    f0_bins: int = 200

    def problem(self) -> str | None:
        if self.f0_min >= self.f0_max:
            return f"f0_min ({self.f0_min}) must be below f0_max ({self.f0_max})"
        return None


@dataclass
class WorldConfig:
    """The WORLD vocoder's parameters as latents (`nn/world.py`): per frame log-f0, a voicing flag, a coded
    spectral envelope and coded band aperiodicities, each scaled by a weight so that a squared error in the
    latents (what the quantizer's nearest-code search minimises) weighs each part as the ear does."""
    limits: typing.ClassVar = {"envelope_dims": (2, None), "f0_min": (1, None), "f0_max": (1, None),
                               "f0_weight": (0, None), "voicing_weight": (0, None), "aperiodicity_weight": (0, None),
                               "postfilter": (0, None), "hop_length": (1, None), "n_fft": (2, None),
                               "block_frames": (1, None), "context_frames": (0, None),
                               "pitch_time_scale": (1, 4)}
    envelope_dims: int = 40
    f0_min: float = 50.0
    f0_max: float = 500.0
    # 30 per natural-log unit of f0: a 1 % error weighs as 0.3 of one coded-envelope coefficient. A weight of 10
    # left f0 errors of 11 cents instead of 4 and scored lower (docs/world-codec.md).
    f0_weight: float = 30.0
    voicing_weight: float = 3.0
    aperiodicity_weight: float = 0.1  # per dB
    # Cepstral emphasis at decoding: envelope coefficients 2 and up are multiplied by this, which sharpens the
    # formants that quantization blurs (the HMM-synthesis postfilter); 1: off.
    postfilter: float = 1.0
    hop_length: int = 320  # samples per frame (the learned encoders take theirs from `seanet.ratios`)
    # The analysis runs on blocks of this many frames, each with `context_frames` of audio on either side (zeros
    # before the start and after the end), the same way offline and streaming: so a stream's codes equal the
    # offline ones, its latency is block_frames + context_frames, and blocks run on several threads.
    block_frames: int = 150
    context_frames: int = 20
    n_fft: int = 640  # the synthesis frames, a multiple of the hop (as `harmonic.n_fft`)
    # Harvest, nearly all of the encoding time, works on a fixed 1 ms grid with windows of a few periods of its
    # lowest f0. Given the audio as if played this many times faster (its rate and f0 range scaled, f0 scaled
    # back), it takes about this factor squared less time, at a small cost in f0 precision (docs/world-codec.md).
    pitch_time_scale: float = 1.0
    # Harvest's f0 refined by WORLD's StoneMask (the instantaneous frequency of the first harmonics), about 1 ms
    # per second of audio: it scores higher whether Harvest reads the audio at its own speed or faster.
    stonemask: bool = False

    @property
    def log_f0_centre(self) -> float:
        """The log-f0 that the latents' f0 channel holds as 0: the middle of the range on a log scale."""
        return 0.5 * math.log(self.f0_min * self.f0_max)

    def problem(self) -> str | None:
        if self.f0_min >= self.f0_max:
            return f"f0_min ({self.f0_min}) must be below f0_max ({self.f0_max})"
        return None


@dataclass
class RefinerConfig:
    """A learned estimate of what quantization loses, added to the decoded latents (`nn/refiner.py`): one small
    network per number of codebooks, fitted after the codebooks on the training audio's coded latents."""
    limits: typing.ClassVar = {"codebooks": (1, None), "context_frames": (0, None), "lookahead_frames": (0, None),
                               "hidden_dim": (1, None)}
    codebooks: list[int] = field(default_factory=list)  # the numbers of codebooks that get a network; empty: none
    context_frames: int = 6   # past frames each network reads beside the frame it corrects
    # and frames after it: a stream decoder's audio lags its codes by as many frames (0: causal)
    lookahead_frames: int = 0
    hidden_dim: int = 512


@dataclass
class ModelConfig:
    limits: typing.ClassVar = {"sample_rate": (1, None)}
    name: str = "codec"
    sample_rate: int = 24000
    # The encoder, from `codec.nn.ENCODERS`: SEANet's strided convolutions (configured by `seanet`, whose
    # `ratios` set the hop and whose `dimension` sets the latents every decoder reads).
    # Or `world`: WORLD's analysis (pyworld), no learned weights, with the `world` decoder only.
    encoder: typing.Literal["seanet", "world"] = "seanet"
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    # The decoder, from `codec.nn.DECODERS`: SEANet's sample-rate decoder (EnCodec), or the frame-rate ConvNeXt
    # + inverse STFT (Vocos), configured by `istft`, which trains and decodes several times cheaper on a CPU; or
    # that backbone driving an oscillator from a predicted f0 (`harmonic`; docs/harmonic-decoder.md).
    # Or `world`: the harmonic decoder's oscillator driven by the `world` encoder's parameters (docs/world-codec.md).
    decoder: typing.Literal["seanet", "istft", "harmonic", "world"] = "seanet"
    istft: ISTFTDecoderConfig = field(default_factory=ISTFTDecoderConfig)
    harmonic: HarmonicDecoderConfig = field(default_factory=HarmonicDecoderConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of the encoder's strides, or `world.hop_length`."""
        return self.world.hop_length if self.encoder == "world" else math.prod(self.seanet.ratios)

    @property
    def latent_dim(self) -> int:
        """Channels of the latents the quantizer codes: seanet.dimension, or the WORLD parameters' count."""
        if self.encoder == "world":
            from .nn.world import world_dimension
            return world_dimension(self.world.envelope_dims, self.sample_rate)
        return self.seanet.dimension

    def problem(self) -> str | None:
        hop = self.hop_length
        if (self.encoder == "world") != (self.decoder == "world"):
            return "encoder: world and decoder: world go together (the decoder reads WORLD's parameters)"
        if self.quantizer.prediction and (self.encoder != "world" or self.quantizer.code_dim):
            return ("quantizer.prediction goes with encoder: world and no code_dim (its codebooks are fitted to the "
                    "prediction's errors; a trained encoder's codebooks are not)")
        if self.quantizer.search_weights and len(self.quantizer.search_weights) != self.latent_dim:
            return (f"quantizer.search_weights holds {len(self.quantizer.search_weights)} weights, one per latent "
                    f"dimension ({self.latent_dim}) or none")
        if self.encoder == "world" and self.world.block_frames % self.quantizer.search_frames:
            return (f"quantizer.search_frames {self.quantizer.search_frames} must divide world.block_frames "
                    f"{self.world.block_frames}, so that a stream's blocks search what offline encoding searches")
        if self.refiner.codebooks and self.encoder != "world":
            return "refiner.codebooks goes with encoder: world (its networks are fitted after the fitted codebooks)"
        if any(n > self.quantizer.num_codebooks for n in self.refiner.codebooks) or \
                len(set(self.refiner.codebooks)) < len(self.refiner.codebooks):
            return (f"refiner.codebooks {self.refiner.codebooks}: distinct numbers of codebooks from 1 to "
                    f"quantizer.num_codebooks ({self.quantizer.num_codebooks})")
        if self.decoder == "world" and self.world.n_fft % hop:
            return f"world.n_fft {self.world.n_fft} must be a multiple of the hop ({hop})"
        if self.decoder == "istft" and (self.istft.n_fft % hop or self.istft.n_fft % 2):
            return (f"istft.n_fft {self.istft.n_fft} must be an even multiple of the hop ({hop}, the product of "
                    f"seanet.ratios), e.g. {2 * hop}")
        return None


def _convert(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        return _convert(value, next(a for a in options if a is not type(None)), where)
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation in (int, float) and isinstance(value, str):
        value = _number(value)  # YAML reads 1e-4 (no dot) as a string
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 1e308 else math.inf
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        # nan slips past every limit (each comparison is False) and trains a model of NaN weights without a word
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if annotation is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # steps=1e5
    if annotation in (int, float, str, bool) and not isinstance(value, annotation) or \
            (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass `cls` from a dict; nested dataclasses recurse; unknown keys and values outside a class's
    `limits` ({field: (lowest, highest)}, None for no bound) raise ConfigError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    config = cls(**{k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()})
    for name, (lowest, highest) in getattr(cls, "limits", {}).items():
        value = getattr(config, name)
        values = value if isinstance(value, list) else [value]
        if any(v is not None and (lowest is not None and v < lowest or highest is not None and v > highest)
               for v in values):
            bounds = f"at least {lowest}" if highest is None else f"between {lowest} and {highest}"
            raise ConfigError(f"{where}.{name}: {value!r} is out of range (must be {bounds})")
    problem = config.problem() if hasattr(config, "problem") else None
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return config


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()):
    """A YAML file's data with every `include: FILE` (at the top or in any section) replaced by that file's data,
    the section's other keys laid over it: `model: {include: ../../configs/low-latency.yaml, name: mine}`. FILE is
    relative to the file that names it."""
    if path.resolve() in chain:
        raise ConfigError(f"config include loop: {' -> '.join(str(p) for p in (*chain, path.resolve()))}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"not valid YAML ({_yaml_problem(error)})"
        if not chain:
            raise ConfigError(f"cannot read config {path}: {reason}" if isinstance(error, OSError)
                              else f"{path}: {reason}") from None
        reason = "no such file" if isinstance(error, FileNotFoundError) else reason
        raise ConfigError(f"{chain[-1]}: include {path}: {reason}") from None
    return _resolve_includes(data, path, (*chain, path.resolve()))


def _resolve_includes(data, path: Path, chain: tuple[Path, ...]):
    if not isinstance(data, dict):
        return data
    data = {key: _resolve_includes(value, path, chain) for key, value in data.items()}
    if "include" not in data:
        return data
    target = data.pop("include")
    if not isinstance(target, str):
        raise ConfigError(f"{path}: include: expected a file name, got {target!r}")
    included = _read_yaml(path.parent / target, chain)
    if not isinstance(included, dict):
        raise ConfigError(f"{path}: include {target}: expected a mapping, got {included!r}")
    return _merge(included, data)


def _merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`: sections merge key by key, any other value replaces the base's."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def load_yaml(cls, path: str | Path, overrides: list[str] | None = None):
    """Load `cls` from a YAML file (its `include:`s resolved), then apply `key.sub=value` overrides (values parsed
    as YAML)."""
    path = Path(path)
    data = _read_yaml(path) or {}
    config = from_dict(cls, data, str(path))
    if not overrides:
        return config
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: '{part}' is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: not a YAML value ({_yaml_problem(error)})") from None
    return from_dict(cls, data, "override")  # the file alone was valid: what fails now is an override


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message in one line: what is wrong and where (its own message spans 5-8 lines with a snippet)."""
    mark = getattr(error, "problem_mark", None)
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what
