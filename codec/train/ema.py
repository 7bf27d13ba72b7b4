"""Exponential moving average of the generator's weights, the weights that validation and export use."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Averages parameters; copies buffers. A buffer is a statistic or a setting fitted to data (SimVQ's latent
    scale, set once from the first batch), and an average of its initial and fitted values is neither.

    The decay warms up as (1 + n) / (10 + n) after n updates, up to `decay`: with a fixed 0.999 from step 0, the
    untrained initial weights would still hold 13 % of the average after 2,000 steps."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def restart(self) -> None:
        """Forget the average: the next update all but copies the model (after a codebook refit, say, which
        renumbers the codes, so that averaging old and new codebooks would mix unrelated vectors)."""
        self.updates.zero_()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = self.updates.item()
        decay = min(self.decay, (1 + n) / (10 + n))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.to(average.dtype), 1 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)
        self.updates += 1

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Checkpoints written before the warm-up existed have no count: their averages are long past it.
        if "updates" not in state_dict:
            state_dict = {**state_dict, "updates": torch.tensor(10 ** 9)}
        return super().load_state_dict(state_dict, strict, assign)
