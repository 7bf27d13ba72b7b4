"""The processes `accelerate launch` or `torchrun` started for one command, as far as the export needs them: its
rank and count (RANK, WORLD_SIZE), and a way to share a value with the others; and the device a process runs on."""
from __future__ import annotations

import os
from datetime import timedelta

import torch

from .errors import CodecError, ConfigError


class ProcessGroup:
    """This process's place among the processes a launcher started, or a group of one."""

    def __init__(self) -> None:
        self.rank, self.size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.owned = self.size > 1 and not torch.distributed.is_initialized()
        if self.owned:
            # gloo coordinates CPU and GPU machines alike; the long timeout is for a process that waits at
            # `gather` while the slowest one finishes a shard.
            torch.distributed.init_process_group("gloo", timeout=timedelta(days=1))

    def gather(self, value) -> list:
        """Every process's `value`, in rank order, on every process."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        try:
            torch.distributed.all_gather_object(values, value)
        except RuntimeError as error:  # gloo's report of a process that has died (killed, or out of memory)
            raise CodecError(f"another process of the export has stopped ({str(error).splitlines()[0]})") from None
        return values

    def close(self) -> None:
        if self.owned:
            torch.distributed.destroy_process_group()


def choose_device(requested: str | None = None) -> torch.device:
    """`requested`, checked; by default cuda:LOCAL_RANK where a GPU is present, else the CPU."""
    if requested is None:
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(f"--device {requested}: not usable here ({str(error).splitlines()[0]})") from None
    return device
