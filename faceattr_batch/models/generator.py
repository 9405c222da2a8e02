"""The conditional face generator and its discriminator (64 x 64 colour chips).

Conditioning on (gender, race, age) enters the generator through conditional BatchNorm in every block, not
only at the input, because earlier attempts that fed labels once were ignored by the network. The
discriminator is a projection discriminator (spectral norm, one embedding per attribute, age continuous)
with an auxiliary head that classifies real faces, so the generator is also pushed towards faces whose
attributes a classifier can read.

Two generations share this module, chosen by the config (a file's config says which it is): v1 upsamples with
transposed convolutions and reads age back as a regression in decades; v2 upsamples by resizing then a 3x3
convolution (no checkerboard) and its discriminator reads age as a distribution over bins. Where ages sit on the
unit scale that both the conditioning and those bins use is the config's ``age_scale``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from faceattr_batch.data.labels import RACES

MAX_AGE = 100.0
# Where an age sits on [0, 1], for the generator's conditioning code and the discriminator's age bins. "log"
# (v1, v2's first runs): log1p(age) / log1p(100), fine steps for children but ages 40-100 squeezed into a fifth
# of the scale (a bin 9 years wide at 60, 13 at 85); "sqrt": sqrt(age / 100), 40-100 over 37% of it (5-6 years a
# bin there), a year a bin at 3.
AGE_SCALES = ("log", "sqrt")


@dataclass(frozen=True)
class GeneratorConfig:
    resolution: int = 64
    z_dim: int = 128
    cond_dim: int = 128
    g_width: int = 16  # generator channels at the output resolution; doubled per halving (max 512)
    d_width: int = 32  # discriminator channels after its first layer; doubled per halving (max 512)
    # v1 defaults, so that files written before these fields load as what they are
    upsample: str = "transposed"  # or "resize": nearest-neighbour x2 then a 3x3 convolution
    age_bins: int = 0  # 0: the auxiliary head regresses age in decades; N: a distribution over N bins
    age_scale: str = "log"  # one of AGE_SCALES

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def g_channels(self) -> list[int]:
        """Channels at 4, 8, ..., resolution."""
        steps = int(math.log2(self.resolution // 4))
        return [min(512, self.g_width * 2 ** (steps - i)) for i in range(steps + 1)]

    def d_channels(self) -> list[int]:
        """Channels at resolution / 2, ..., 4."""
        steps = int(math.log2(self.resolution // 4))
        return [min(512, self.d_width * 2**i) for i in range(steps)]


def age_position(age: torch.Tensor, scale: str) -> torch.Tensor:
    """Ages (years) on the unit scale ``scale`` (AGE_SCALES)."""
    age = age.float().clamp(min=0)
    if scale == "log":
        return torch.log1p(age) / math.log1p(MAX_AGE)
    if scale == "sqrt":
        return torch.sqrt(age / MAX_AGE)
    raise ValueError(f"age scale {scale!r}: use one of {AGE_SCALES}")


def age_features(age: torch.Tensor, scale: str = "log") -> torch.Tensor:
    """A smooth code for a continuous age: its position on the scale plus a few sinusoids of it."""
    a = age_position(age, scale)
    k = torch.arange(1, 5, device=age.device, dtype=torch.float32)
    return torch.cat([a[:, None], torch.sin(math.pi * k * a[:, None]), torch.cos(math.pi * k * a[:, None])], 1)


AGE_FEATURES = 9


class ConditionEmbedding(nn.Module):
    """(gender, race, age) -> one vector: learnt tables for the codes, a small MLP for age."""

    def __init__(self, dim: int, wrap=lambda m: m, age_scale: str = "log"):
        super().__init__()
        self.age_scale = age_scale
        self.gender = wrap(nn.Embedding(2, dim))
        self.race = wrap(nn.Embedding(len(RACES), dim))
        self.age = nn.Sequential(wrap(nn.Linear(AGE_FEATURES, dim)), nn.LeakyReLU(0.2), wrap(nn.Linear(dim, dim)))

    def forward(self, gender: torch.Tensor, race: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        return self.gender(gender) + self.race(race) + self.age(age_features(age, self.age_scale))


class ConditionalBatchNorm(nn.Module):
    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        nn.init.ones_(self.gain.bias)
        nn.init.zeros_(self.bias.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gain(cond)[:, :, None, None] + self.bias(cond)[:, :, None, None]


UPSAMPLERS = ("transposed", "resize")

# Nearest x2 then a 3x3 convolution, per axis: the output at 2i reads x[i-1] through tap 0 and x[i] through taps
# 1 + 2; at 2i+1, x[i] through taps 0 + 1 and x[i+1] through tap 2. That is a stride-2 transposed convolution
# whose 4-tap kernel is this matrix times the 3 taps (kernel index k reads x[j] at output 2j + k - 1).
_RESIZE_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


class ResizeConv(nn.Module):
    """Nearest-neighbour x2 upsampling then a 3x3 convolution (no checkerboard: every output pixel sees the same
    number of taps), computed exactly as one transposed convolution with a folded 4x4 kernel: 4/9 of the
    multiply-adds and no 4x larger intermediate, in training and in ``synth``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = _RESIZE_TAPS.to(device=x.device, dtype=x.dtype)
        # a conv weight is (out, in, 3, 3); a transposed conv's is (in, out, 4, 4)
        kernel = torch.einsum("ka,lb,oiab->iokl", taps, taps, self.conv.weight)
        return F.conv_transpose2d(x, kernel, self.conv.bias, stride=2, padding=1)


class UpBlock(nn.Module):
    """x2 upsampling, conditional BN, ReLU; at low resolutions, where pose and identity form, a residual 3x3
    refinement as well. Transposed convolutions (DCGAN) are 2.25x cheaper than resize + 3x3 convolution but
    leave a checkerboard in flat regions."""

    def __init__(self, cin: int, cout: int, cond_dim: int, refine: bool, upsample: str = "transposed"):
        super().__init__()
        if upsample == "transposed":
            self.up = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        elif upsample == "resize":
            self.up = ResizeConv(cin, cout)
        else:
            raise ValueError(f"upsample {upsample!r}: use one of {UPSAMPLERS}")
        self.bn = ConditionalBatchNorm(cout, cond_dim)
        self.refine = nn.Conv2d(cout, cout, 3, 1, 1) if refine else None
        self.refine_bn = ConditionalBatchNorm(cout, cond_dim) if refine else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.up(x), cond))
        if self.refine is not None:
            x = x + F.relu(self.refine_bn(self.refine(x), cond))
        return x


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.config = config
        channels = config.g_channels()
        self.embed = ConditionEmbedding(config.cond_dim, age_scale=config.age_scale)
        joint = config.z_dim + config.cond_dim
        self.fc = nn.Linear(joint, 4 * 4 * channels[0])
        self.fc_bn = ConditionalBatchNorm(channels[0], joint)
        self.blocks = nn.ModuleList(
            UpBlock(a, b, joint, refine=4 * 2 ** (i + 1) <= 16, upsample=config.upsample)
            for i, (a, b) in enumerate(zip(channels[:-1], channels[1:], strict=True))
        )
        self.out = nn.Conv2d(channels[-1], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, gender: torch.Tensor, race: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], N x 3 x R x R."""
        cond = torch.cat([z, self.embed(gender, race, age)], dim=1)
        x = F.relu(self.fc_bn(self.fc(cond).view(z.shape[0], -1, 4, 4), cond))
        for block in self.blocks:
            x = block(x, cond)
        return torch.tanh(self.out(x))


class Discriminator(nn.Module):
    """Strided 4x4 convs with spectral norm down to 4 x 4, a 3x3 conv there, then sum pooling."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        channels = config.d_channels()
        ins = [3] + channels[:-1]
        layers = []
        for cin, cout in zip(ins, channels, strict=True):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2)]
        layers += [spectral_norm(nn.Conv2d(channels[-1], channels[-1], 3, 1, 1)), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*layers)
        width = channels[-1]
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embed = ConditionEmbedding(width, wrap=spectral_norm, age_scale=config.age_scale)
        # Auxiliary classifier (gender logit, race logits, age), trained on real faces only.
        self.age_bins, self.age_scale = config.age_bins, config.age_scale
        self.aux = nn.Linear(width, 1 + len(RACES) + max(1, config.age_bins))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).sum(dim=(2, 3))

    def forward(self, x, gender, race, age):
        """(realness score per image, auxiliary predictions)."""
        phi = self.features(x)
        score = self.linear(phi).squeeze(1) + (self.embed(gender, race, age) * phi).sum(dim=1)
        return score, self.aux(phi)

    def aux_loss(self, aux, gender, race, age, age_weight: float = 1.0) -> torch.Tensor:
        """Loss of the auxiliary head: gender BCE + race CE + ``age_weight`` x age, either smooth L1 in decades (v1)
        or the cross entropy against a Gaussian over the age bins (label-distribution learning, v2: a regression head
        shrinks rare old ages towards the mean, which then asks the generator for too little age)."""
        n_races = len(RACES)
        age_out = aux[:, 1 + n_races :]
        if self.age_bins:
            age_loss = F.cross_entropy(age_out, age_distribution(age, self.age_bins, self.age_scale))
        else:
            age_loss = F.smooth_l1_loss(age_out[:, 0], age.float() / 10.0)
        return (
            F.binary_cross_entropy_with_logits(aux[:, 0], gender.float())
            + F.cross_entropy(aux[:, 1 : 1 + n_races], race)
            + age_weight * age_loss
        )


def age_distribution(age: torch.Tensor, bins: int, scale: str = "log") -> torch.Tensor:
    """Soft targets over ``bins`` bins evenly spaced on the age scale from 0 to 100 years: a Gaussian one bin wide
    around each age (with 32 bins on "log" about 1 year at 3, 7 at 60; on "sqrt" 1 at 3, 5 at 60), normalised;
    N x bins."""
    centres = torch.linspace(0, 1, bins, device=age.device)
    position = age_position(age, scale)
    weights = torch.exp(-0.5 * ((position[:, None] - centres[None, :]) * (bins - 1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, pairs: int) -> torch.Tensor:
    """MSGAN's term: 1 / (mean |G(c, z1) - G(c, z2)| / mean |z1 - z2|) over the batch's first ``pairs`` rows and
    the next ``pairs`` (same conditions, other noise). Small when different noise gives different faces."""
    image_distance = (fake[:pairs] - fake[pairs : 2 * pairs]).abs().mean()
    noise_distance = (z[:pairs] - z[pairs : 2 * pairs]).abs().mean()
    return 1 / (image_distance / noise_distance + 1e-5)


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): colour, translation (1/8) and cutout (1/2), differentiable."""
    n, _, h, w = x.shape

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(x.device)

    x = x + (rand(n, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean
    # translation by up to 1/8 of the side, zero padding
    shift = h // 8
    tx = (rand(n) * (2 * shift + 1)).long() - shift
    ty = (rand(n) * (2 * shift + 1)).long() - shift
    rows = torch.arange(h, device=x.device)[None, :, None] + ty[:, None, None].to(x.device)
    cols = torch.arange(w, device=x.device)[None, None, :] + tx[:, None, None].to(x.device)
    padded = F.pad(x, [1, 1, 1, 1])
    rows, cols = (rows + 1).clamp(0, h + 1), (cols + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    # cutout of a square half the side
    size = h // 2
    cx = (rand(n) * (w + 1 - size % 2)).long()
    cy = (rand(n) * (h + 1 - size % 2)).long()
    gy = torch.arange(h, device=x.device)[None, :, None] - cy[:, None, None].to(x.device) + size // 2
    gx = torch.arange(w, device=x.device)[None, None, :] - cx[:, None, None].to(x.device) + size // 2
    keep = ~((gy >= 0) & (gy < size) & (gx >= 0) & (gx < size))
    return x * keep[:, None].float()
