"""LPIPS (Zhang et al., CVPR 2018) through the optional `lpips` package, loaded without any download.

The LPIPS distance is a learned weighting of the differences between deep features of two images (lower is
more alike). The package ships its linear calibration layers; the backbone (AlexNet, VGG16 or SqueezeNet 1.1)
uses torchvision's ImageNet weights, which the package would download at run time. Here they come from a file
named in the options or from torchvision's file in the torch cache, and are loaded with ``weights_only=True``;
when either piece is missing the metric is unavailable, with the reason, rather than computed with other
weights.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchvision
from torch import nn

from ..utils.files import torch_hub_cache_file
from ..utils.misc import listing
from .psnr_ssim import _to_255

LpipsNet = Literal["alex", "vgg", "squeeze"]

# torchvision's ImageNet weights of each backbone, as the lpips package asks for them.
_BACKBONE_WEIGHTS = {
    "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "squeeze": torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
}
_LPIPS_VERSION = "0.1"


class MetricUnavailableError(RuntimeError):
    """A metric cannot be computed here; the message says why and what to do."""


def backbone_cache_file(net: LpipsNet) -> Path:
    """Where torchvision keeps (or would download) the ImageNet weights of an LPIPS backbone."""
    return torch_hub_cache_file(_BACKBONE_WEIGHTS[net].url)


def load_lpips(net: LpipsNet = "alex", backbone_weights: str | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """The lpips package's LPIPS network (version 0.1) with its shipped linear layers and ImageNet backbone.

    Args:
        net: The backbone: 'alex' (the LPIPS authors' default), 'vgg' (VGG16) or 'squeeze'.
        backbone_weights: A torchvision state dict of that backbone (the classifier, if present, is ignored);
            None: torchvision's file in the torch cache.
        device: Where the network runs.

    Raises:
        MetricUnavailableError: the package or a weight file is missing.
    """
    try:
        import lpips
    except ImportError:
        raise MetricUnavailableError("LPIPS needs the optional lpips package: pip install lpips") from None
    if net not in _BACKBONE_WEIGHTS:
        raise ValueError(f"LPIPS net must be one of {', '.join(_BACKBONE_WEIGHTS)}, got {net!r}")
    path = Path(backbone_weights) if backbone_weights else backbone_cache_file(net)
    if not path.is_file():
        where = "the file given" if backbone_weights else "the torch cache"
        raise MetricUnavailableError(
            f"LPIPS ({net}) needs torchvision's ImageNet weights of its backbone, not found at {path} ({where}); "
            f"copy {os.path.basename(_BACKBONE_WEIGHTS[net].url)} there (downloadable from torchvision) or name a "
            "local copy (metric_options.lpips_weights in an option file, --lpips-weights for scripts/evaluate.py)")
    linear = Path(lpips.__file__).parent / "weights" / f"v{_LPIPS_VERSION}" / f"{net}.pth"
    if not linear.is_file():
        raise MetricUnavailableError(f"the lpips package has no linear layers for {net} at {linear}; reinstall it")

    # pretrained=False / pnet_rand=True: the package builds the network without loading or downloading anything.
    with warnings.catch_warnings():
        # The package builds torchvision's networks with the `pretrained` argument deprecated since 0.13.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, version=_LPIPS_VERSION, pretrained=False, pnet_rand=True, verbose=False)
    _load_backbone(model.net, torch.load(path, map_location="cpu", weights_only=True), path)
    missing, unexpected = model.load_state_dict(torch.load(linear, map_location="cpu", weights_only=True),
                                                strict=False)
    linear_missing = [k for k in missing if k.startswith("lin") and not k.startswith("lins.")]
    if unexpected or linear_missing:
        raise MetricUnavailableError(f"{linear} does not fit the lpips package's network (missing {linear_missing}, "
                                f"unexpected {unexpected}); reinstall lpips")
    return model.eval().requires_grad_(False).to(device)


def _load_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """torchvision `features.<i>.*` keys into the package's slices, which keep each layer's index as its name."""
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    mapped = {}
    for slice_name, block in backbone.named_children():
        for index, _ in block.named_children():
            for key in (k for k in features if k.startswith(f"{index}.")):
                mapped[f"{slice_name}.{key}"] = features[key]
    expected = set(backbone.state_dict())
    if set(mapped) != expected:
        missing = sorted(expected - set(mapped))
        raise MetricUnavailableError(f"{source} is not a torchvision state dict of the LPIPS backbone: "
                                f"{len(missing)} weights missing ({listing(missing, 3)})")
    backbone.load_state_dict(mapped, strict=True)


def _to_lpips_input(img: np.ndarray, crop_border: int, device: torch.device) -> torch.Tensor:
    h, w = img.shape[:2]
    img = img[crop_border : h - crop_border, crop_border : w - crop_border]
    img = _to_255(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device, torch.float32)
    return (t / 255.0 * 2.0 - 1.0)[None]  # LPIPS takes RGB in [-1, 1]


@torch.inference_mode()
def calculate_lpips(model: nn.Module, img1: np.ndarray, img2: np.ndarray, crop_border: int) -> float:
    """LPIPS distance between two RGB (or gray) images of the same size, uint8 or float in [0, 1] (as PSNR and SSIM
    take them), `crop_border` pixels cropped."""
    if img1.shape != img2.shape:
        raise ValueError(f"images must have the same shape, got {img1.shape} and {img2.shape}")
    device = next(model.parameters()).device
    distance = model(_to_lpips_input(img1, crop_border, device), _to_lpips_input(img2, crop_border, device))
    return float(distance.item())
