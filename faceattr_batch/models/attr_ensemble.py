"""Several attribute networks read as one model: each sees the chip at its own input size, their inference
logits (mirror and race bias included) are averaged, and one set of temperatures calibrates the mean.

Networks trained apart (another architecture, another input size) make partly different mistakes, so the mean
of their logits beats each of them (MODEL_CARD.md has the comparison). The chip is decoded once, at the largest
member's size; smaller members get it resized in the graph, so `predict` and the ONNX export see one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from faceattr_batch.models.attr_net import AttrLogits, AttrNet, AttrOutputs, calibrated_outputs


@dataclass(frozen=True)
class EnsembleConfig:
    input_size: int  # the largest member's: the size chips are decoded at
    members: tuple[dict, ...]  # each member's AttrNetConfig as a dict

    def to_dict(self) -> dict:
        return {"input_size": self.input_size, "backbone": "ensemble", "members": list(self.members)}


def resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``size_out x size_in`` weights of an antialiased bilinear resize along one axis. The filter is separable,
    so ``M @ chip @ M.T`` resizes a chip; as matrix products it exports to any ONNX opset, which
    ``F.interpolate(..., antialias=True)`` does not."""
    identity = torch.eye(size_in).view(1, 1, size_in, size_in)
    return F.interpolate(identity, size=(size_out, size_in), mode="bilinear", antialias=True, align_corners=False)[0, 0]


def resize_chips(pixels: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """N x 3 x S x S chips (0..255) resized by ``resize_matrix`` weights, rounded like a decoded uint8 chip."""
    resized = matrix @ pixels.float() @ matrix.T
    return resized.round().clamp(0, 255)


class AttrEnsemble(nn.Module):
    def __init__(self, members: Sequence[AttrNet]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len({net.config.age_bins for net in members}) != 1:
            raise ValueError("ensemble members must share the age bins")
        self.members = nn.ModuleList(members)
        self.config = EnsembleConfig(
            input_size=max(net.config.input_size for net in members),
            members=tuple(net.config.to_dict() for net in members),
        )
        self.register_buffer("temperatures", torch.ones(3))  # fitted on validation for the mean logits
        size = self.config.input_size
        for i, net in enumerate(members):  # not saved: rebuilt from the sizes on load; buffers follow .to(device)
            matrix = None if net.config.input_size == size else resize_matrix(size, net.config.input_size)
            self.register_buffer(f"resize_{i}", matrix, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "age_values", None)  # files written before ages were read as quantiles held it
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def member_pixels(self, i: int, pixels: torch.Tensor) -> torch.Tensor:
        """The chips at member ``i``'s input size (unchanged where it is the ensemble's)."""
        matrix = getattr(self, f"resize_{i}")
        return pixels if matrix is None else resize_chips(pixels, matrix)

    def logits(self, pixels: torch.Tensor) -> AttrLogits:
        parts = [net.logits(self.member_pixels(i, pixels)) for i, net in enumerate(self.members)]
        return AttrLogits(*(torch.stack(head).mean(dim=0) for head in zip(*parts, strict=True)))

    def infer(self, pixels: torch.Tensor) -> AttrOutputs:
        return calibrated_outputs(self.logits(pixels), self.temperatures)
