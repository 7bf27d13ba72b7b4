"""Discriminators: multi-period (HiFi-GAN), multi-scale waveform (MelGAN), multi-resolution complex STFT with
frequency bands (DAC). Each returns, per sub-discriminator, its logits and its intermediate feature maps (for the
feature-matching loss). `width` scales every channel count so a CPU run can afford them."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Output = list[tuple[torch.Tensor, list[torch.Tensor]]]
SLOPE = 0.1


def _run(layers: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    features = []
    for layer in layers:
        x = nn.functional.leaky_relu(layer(x), SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return x, features


class PeriodDiscriminator(nn.Module):
    """Looks at every `period`-th sample: the waveform folded into a (T / period, period) image."""

    def __init__(self, period: int, width: float) -> None:
        super().__init__()
        self.period = period
        channels = [1] + [max(8, int(c * width)) for c in (32, 128, 512, 1024, 1024)]
        self.layers = nn.ModuleList(
            weight_norm(nn.Conv2d(i, o, (5, 1), (3 if n < 4 else 1, 1), padding=(2, 0)))
            for n, (i, o) in enumerate(zip(channels, channels[1:])))
        self.post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor):
        pad = (-audio.shape[-1]) % self.period
        x = nn.functional.pad(audio, (0, pad), mode="reflect" if pad < audio.shape[-1] else "constant")
        return _run(self.layers, self.post, x.view(x.shape[0], 1, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """Grouped strided 1-d convolutions over the waveform, after `downsample`-fold average pooling."""

    def __init__(self, downsample: int, width: float) -> None:
        super().__init__()
        self.pool = nn.AvgPool1d(downsample * 2, downsample, padding=downsample) if downsample > 1 else nn.Identity()
        c = [max(4, int(v * width)) for v in (16, 64, 256, 1024, 1024, 1024)]
        specs = [(1, c[0], 15, 1, 1), (c[0], c[1], 41, 4, 4), (c[1], c[2], 41, 4, 16), (c[2], c[3], 41, 4, 64),
                 (c[3], c[4], 41, 4, 256), (c[4], c[5], 5, 1, 1)]
        self.layers = nn.ModuleList(
            weight_norm(nn.Conv1d(i, o, k, s, padding=k // 2, groups=_groups(i, o, g))) for i, o, k, s, g in specs)
        self.post = weight_norm(nn.Conv1d(c[5], 1, 3, padding=1))

    def forward(self, audio: torch.Tensor):
        return _run(self.layers, self.post, self.pool(audio))


def _groups(inputs: int, outputs: int, wanted: int) -> int:
    groups = min(wanted, inputs, outputs)
    while inputs % groups or outputs % groups:
        groups -= 1
    return groups


class STFTDiscriminator(nn.Module):
    """2-d convolutions over a spectrogram, one stack per frequency band, so low and high bands get their own
    filters (DAC). `complex`: real and imaginary parts as two channels (DAC), so it judges phase too;
    `magnitude`: the log magnitude alone (UnivNet's multi-resolution discriminator, one of the SimVQ paper's)."""

    BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))

    def __init__(self, window: int, width: float, spectrum: str = "complex") -> None:
        super().__init__()
        self.window, self.spectrum = window, spectrum
        channels = max(8, int(32 * width))
        bins = window // 2 + 1
        self.bands = [(int(lo * bins), int(hi * bins)) for lo, hi in self.BANDS]

        def stack():
            inputs = 2 if spectrum == "complex" else 1
            return nn.ModuleList([weight_norm(nn.Conv2d(inputs, channels, (3, 9), padding=(1, 4)))] + [
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))) for _ in range(3)] + [
                weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))])
        self.stacks = nn.ModuleList(stack() for _ in self.bands)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor):
        spec = torch.stft(audio[:, 0], self.window, self.window // 4, window=torch.hann_window(
            self.window, device=audio.device), return_complex=True)
        if self.spectrum == "complex":
            x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        else:
            x = torch.log(spec.abs().clamp(min=1e-5)).transpose(1, 2)[:, None]  # (B, 1, frames, bins)
        features, outputs = [], []
        for (lo, hi), layers in zip(self.bands, self.stacks):
            band = x[..., lo:hi]
            for layer in layers:
                band = nn.functional.leaky_relu(layer(band), SLOPE)
                features.append(band)
            outputs.append(band)
        x = self.post(torch.cat(outputs, dim=-1))
        features.append(x)
        return x, features


class Discriminators(nn.Module):
    """The set a run uses, chosen in its config; `forward(audio)` returns every sub-discriminator's output."""

    def __init__(self, periods=(2, 3, 5, 7, 11), scales=(1, 2, 4), stft_windows=(2048, 1024, 512),
                 width: float = 1.0, stft_spectrum: str = "complex") -> None:
        super().__init__()
        self.members = nn.ModuleList(
            [PeriodDiscriminator(p, width) for p in periods] + [ScaleDiscriminator(s, width) for s in scales]
            + [STFTDiscriminator(w, width, stft_spectrum) for w in stft_windows])
        if not len(self.members):
            raise ValueError("at least one discriminator is needed")

    def forward(self, audio: torch.Tensor) -> Output:
        return [member(audio) for member in self.members]
