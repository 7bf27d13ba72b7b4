"""wav2vec 2.0 Base (fairseq's `wav2vec_small`) for inference: the feature encoder UTMOS22 is built on.

Written from the model's published configuration, with fairseq's parameter names so that its state dicts load
unchanged: 7 convolutions (no bias; GroupNorm on the first only, fairseq's "default" extractor mode), LayerNorm
and a 512 -> 768 projection, a grouped positional convolution, then 12 post-LayerNorm transformer blocks. Only
what inference needs: no masking, no quantizer, no dropout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (channels, kernel, stride) of the feature extractor: receptive field 400 samples, hop 320 (50 frames/s at 16 kHz)
CONV_LAYERS = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
MIN_SAMPLES = 400
DIM, HEADS, FFN, LAYERS = 768, 12, 3072, 12
POS_KERNEL, POS_GROUPS = 128, 16


class FeatureExtractor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, channels = [], 1
        for i, (out, kernel, stride) in enumerate(CONV_LAYERS):
            # Index 1 is fairseq's Dropout slot; keeping the slot keeps the checkpoint's key numbers.
            block = [nn.Conv1d(channels, out, kernel, stride, bias=False), nn.Identity()]
            block += [nn.GroupNorm(out, out), nn.GELU()] if i == 0 else [nn.GELU()]
            layers.append(nn.Sequential(*block))
            channels = out
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


def fold_weight_norm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Replace `{prefix}weight_g` / `{prefix}weight_v` by `{prefix}weight` = v * g / ||v|| (norm over dims 0, 1)."""
    state = dict(state)
    g, v = state.pop(prefix + "weight_g"), state.pop(prefix + "weight_v")
    state[prefix + "weight"] = v * (g / v.norm(dim=(0, 1), keepdim=True))
    return state


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, HEADS, DIM // HEADS).transpose(1, 2)

        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        y = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                           attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, DIM))


class EncoderLayer(nn.Module):
    """Post-LayerNorm block (wav2vec 2.0 Base has `layer_norm_first=False`)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = SelfAttention()
        self.self_attn_layer_norm = nn.LayerNorm(DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, FFN), nn.Linear(FFN, DIM)
        self.final_layer_norm = nn.LayerNorm(DIM)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x, key_padding))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # A grouped convolution over time, added to its input. The checkpoints store it with weight norm over
        # dim 2 (weight_g, weight_v); `fold_weight_norm` makes a plain weight of those at load time.
        self.pos_conv = nn.ModuleList([nn.Conv1d(DIM, DIM, POS_KERNEL, padding=POS_KERNEL // 2, groups=POS_GROUPS)])
        self.layer_norm = nn.LayerNorm(DIM)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pos_conv[0](x.transpose(1, 2))[..., :-1]  # an even kernel gives one frame too many ("SamePad")
        x = self.layer_norm(x + F.gelu(y).transpose(1, 2))
        # fairseq pads the sequence to an even length and masks the pad as a key; the scores depend on it.
        pad = x.shape[1] % 2
        key_padding = None
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
            key_padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            key_padding[:, -pad:] = True
        for layer in self.layers:
            x = layer(x, key_padding)
        return x[:, :x.shape[1] - pad]


class Wav2Vec2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = FeatureExtractor()
        self.layer_norm = nn.LayerNorm(CONV_LAYERS[-1][0])
        self.post_extract_proj = nn.Linear(CONV_LAYERS[-1][0], DIM)
        self.encoder = Encoder()
        # Used only when pre-training masks frames; kept because the checkpoints carry it.
        self.mask_emb = nn.Parameter(torch.zeros(DIM))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (B, T) at 16 kHz, T >= 400 -> last-layer features (B, frames, 768)."""
        features = self.feature_extractor(audio).transpose(1, 2)
        return self.encoder(self.post_extract_proj(self.layer_norm(features)))
