"""Stand-ins for heavy networks, shared by the test modules that need them (imported like ``conftest``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TinyFeatures(torch.nn.Module):
    """A stand-in for Inception: 3 x 299 x 299 -> 16 features, fixed random weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)))
