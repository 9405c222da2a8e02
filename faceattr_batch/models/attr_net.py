"""The attribute network: one forward pass -> gender logit, 5 race logits, a distribution over ages.

Reads top-down: config, the two trunks (a small from-scratch ResNet, or the first blocks of the ImageNet
Inception-v3 that ``fid`` uses), the network, then ``infer`` (the calibrated outputs that predict, train's
validation and the ONNX export all use). Input is the uint8 chip from ``decode.load_chip``; the scaling to
floats happens inside the network, so preprocessing cannot drift between callers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from faceattr_batch.data.labels import MAX_AGE, RACES
from faceattr_batch.models.inception import FIDInceptionV3

AGE_INTERVAL = (0.1, 0.9)  # the reported age interval holds 80% of the predicted distribution
BACKBONES = ("resnet", "inception")


@dataclass(frozen=True)
class AttrNetConfig:
    input_size: int = 64
    backbone: str = "resnet"  # one of BACKBONES
    widths: tuple[int, ...] = (32, 64, 128, 256)  # resnet: channels per stage
    depths: tuple[int, ...] = (1, 1, 1, 1)  # resnet: blocks per stage
    inception_last_block: str = "Mixed_6e"  # inception: the trunk ends after this block
    dropout: float = 0.1
    age_bins: int = MAX_AGE + 1  # one bin per year, 0..120
    tta_flip: bool = False  # average the logits of the image and its mirror image

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AttrNetConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("widths", "depths"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


class AttrLogits(NamedTuple):
    gender: torch.Tensor  # N, logit of "female"
    race: torch.Tensor  # N x 5
    age: torch.Tensor  # N x age_bins


class AttrOutputs(NamedTuple):
    p_female: torch.Tensor  # N
    race_probs: torch.Tensor  # N x 5
    age_median: torch.Tensor  # N, median of the age distribution, in years
    age_low: torch.Tensor  # N, 10th percentile of the age distribution
    age_high: torch.Tensor  # N, 90th percentile


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class ResNetTrunk(nn.Module):
    """Two-conv stride-2 stem, then stages of basic blocks (the first of each later stage halves the size)."""

    input_scale = 64.0  # (x - 127.5) / 64: about [-2, 2]

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]):
        super().__init__()
        stem_width = widths[0]
        self.stem = nn.Sequential(conv_bn(3, stem_width // 2, 2), conv_bn(stem_width // 2, stem_width))
        stages, cin = [], stem_width
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            for block in range(depth):
                stride = 2 if block == 0 and index > 0 else 1
                stages.append(BasicBlock(cin, width, stride))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class InceptionTrunk(FIDInceptionV3):
    """Inception-v3 up to ``last_block``; its parameter names match the FID weights it is initialised from."""

    input_scale = 127.5  # [-1, 1], the range the ImageNet weights were trained on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x)


def build_trunk(config: AttrNetConfig) -> nn.Module:
    if config.backbone == "resnet":
        return ResNetTrunk(config.widths, config.depths)
    if config.backbone == "inception":
        return InceptionTrunk(config.inception_last_block)
    raise ValueError(f"unknown backbone {config.backbone!r} (one of {', '.join(BACKBONES)})")


class AttrNet(nn.Module):
    def __init__(self, config: AttrNetConfig = AttrNetConfig()):
        super().__init__()
        self.config = config
        self.trunk = build_trunk(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.trunk.out_channels, 1 + len(RACES) + config.age_bins)
        # Fitted on validation after training (temperature scaling); 1.0 means uncalibrated.
        self.register_buffer("temperatures", torch.ones(3))  # gender, race, age
        # Set after training to -log(race loss weights): undoes the class weighting at inference (logit
        # adjustment), so predictions follow the real class frequencies again; 0 means unadjusted.
        self.register_buffer("race_bias", torch.zeros(len(RACES)))
        self.register_buffer("age_values", torch.arange(config.age_bins, dtype=torch.float32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before race_bias existed load as unadjusted
        state_dict.setdefault(prefix + "race_bias", torch.zeros(len(RACES)))
        # ... and those written before the trunk had a name kept the ResNet's stem and stages at the top
        for key in [k for k in state_dict if k.startswith((prefix + "stem.", prefix + "stages."))]:
            state_dict[prefix + "trunk." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """The trunk's features averaged over the image (N x channels): what the head reads."""
        x = self.trunk((pixels.float() - 127.5) / self.trunk.input_scale)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, pixels: torch.Tensor) -> AttrLogits:
        """``pixels``: N x 3 x S x S, uint8 (0..255) or float on the same scale."""
        out = self.head(self.dropout(self.pooled(pixels)))
        n_races = len(RACES)
        return AttrLogits(out[:, 0], out[:, 1 : 1 + n_races], out[:, 1 + n_races :])

    def logits(self, pixels: torch.Tensor) -> AttrLogits:
        """Inference logits: the test-time mirror average when the config asks for it, race bias added."""
        if self.config.tta_flip:
            both = self(torch.cat([pixels, pixels.flip(3)]))
            n = pixels.shape[0]
            out = AttrLogits(*((part[:n] + part[n:]) / 2 for part in both))
        else:
            out = self(pixels)
        return out._replace(race=out.race + self.race_bias)

    def infer(self, pixels: torch.Tensor) -> AttrOutputs:
        """Calibrated probabilities, the median age and its 80% interval."""
        return calibrated_outputs(self.logits(pixels), self.temperatures)


def calibrated_outputs(logits: AttrLogits, temperatures: torch.Tensor) -> AttrOutputs:
    """Temperature-scaled probabilities, the median age and its ``AGE_INTERVAL`` from inference logits."""
    t_gender, t_race, t_age = temperatures[0], temperatures[1], temperatures[2]
    age_probs = torch.softmax(logits.age / t_age, dim=1)
    return AttrOutputs(
        torch.sigmoid(logits.gender / t_gender),
        torch.softmax(logits.race / t_race, dim=1),
        *age_quantiles(age_probs, (0.5, *AGE_INTERVAL)),
    )


def age_quantiles(age_probs: torch.Tensor, levels: tuple[float, ...]) -> list[torch.Tensor]:
    """Quantiles (in years) of one-year age distributions N x bins, each bin's mass spread evenly over
    [age - 0.5, age + 0.5]. The median is the age that minimises the expected absolute error, which MAE scores
    (the mean read 0.015 years more on the default's validation faces: MODEL_CARD)."""
    cdf = torch.cumsum(age_probs, dim=1)
    last = age_probs.shape[1] - 1
    quantiles = []
    for level in levels:
        bin_index = (cdf < level).sum(dim=1, keepdim=True).clamp(max=last)  # the bin holding the quantile
        mass = age_probs.gather(1, bin_index)
        below = cdf.gather(1, bin_index) - mass
        within = ((level - below) / mass.clamp(min=1e-12)).clamp(0, 1)
        quantiles.append((bin_index.float() - 0.5 + within).clamp(0, last).squeeze(1))
    return quantiles
