"""A module that lives in host memory and visits the device only while it runs: LTX-Video's text
encoder on a card too small to keep it (T5-XXL, 8.9 GiB in bf16, on an L4).

`module.to(cuda)` then `module.to("cpu")` around each use copies the weights twice per request, both
ways through pageable memory (the driver stages pageable copies through a bounce buffer), and the
copy back is pointless: the weights never change. Here the weights stay where they are on the
host, in page-locked (pinned) memory on CUDA so the copy to the card runs at the bus's speed and
without blocking the host thread; on the way out the device copies are simply dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class HostResident:
    """`module`'s parameters and buffers kept on the host (pinned when `device` is CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module = module
        self.device = device
        self.pinned = device.type == "cuda"
        self._tensors = [*module.parameters(), *module.buffers()]
        for tensor in self._tensors:
            host = tensor.data.to("cpu")
            tensor.data = host.pin_memory() if self.pinned else host
        self._host = [tensor.data for tensor in self._tensors]

    @property
    def host_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host)

    @contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        """The module with its weights on the device for the duration; nothing is copied back."""
        for tensor, host in zip(self._tensors, self._host, strict=True):
            # From pinned memory the copy is queued on the current stream, after which the
            # module's kernels run in order; the host thread does not wait for it.
            # (copy=True: a copy even when the device is the host, so a CPU run has the same life cycle.)
            tensor.data = host.to(self.device, non_blocking=self.pinned, copy=True)
        try:
            yield self.module
        finally:
            for tensor, host in zip(self._tensors, self._host, strict=True):
                tensor.data = host  # the device copy is released (the caching allocator keeps it ordered)
