"""VGG19 feature extractor for ESRGAN's perceptual loss: conv5_4 *before* its ReLU (layer 34).

The paper (section 3.3) uses features before activation because the activated deep features are sparse and
give weaker supervision. Weights come from a local file, torchvision's ImageNet weights in the torch cache, or
(only when an option file explicitly allows it) random initialisation for demos and tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import vgg as vgg_models

from ..utils.files import torch_hub_cache_file
from .layouts import describe_differences, read_weights_file

# conv5_4, the last conv, and the number of layers of torchvision's VGG19 `features`, plain and with batch norm.
CONV5_4 = {False: 34, True: 49}
FEATURE_LAYERS = {False: 37, True: 53}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(OSError):
    """The requested VGG weights cannot be found or downloaded."""


def imagenet_weights_url(use_bn: bool) -> str:
    weights = torchvision.models.VGG19_BN_Weights if use_bn else torchvision.models.VGG19_Weights
    return weights.IMAGENET1K_V1.url


def torchvision_cache_file(use_bn: bool) -> Path:
    """Where torchvision keeps (or would download) the ImageNet VGG19 weights."""
    return torch_hub_cache_file(imagenet_weights_url(use_bn))


def load_vgg_state_dict(weights: str, use_bn: bool, allow_random: bool) -> dict[str, torch.Tensor] | None:
    """Return torchvision-layout VGG19 weights, or None when random weights are allowed and none are at hand.

    `weights` is 'imagenet' (torch cache, downloaded if missing and random weights are not allowed), 'random'
    (needs `allow_random`) or a file.
    """
    if weights == "random":
        if not allow_random:
            raise WeightsUnavailableError("network_F.weights: 'random' needs network_F.allow_random_weights: true")
        return None
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"network_F.weights: no file {path}")
        try:
            return read_weights_file(path)[0]
        except ValueError as err:
            raise WeightsUnavailableError(f"network_F.weights: {err}") from None
    cached = torchvision_cache_file(use_bn)
    if cached.is_file():
        try:
            return read_weights_file(cached)[0]
        except ValueError as err:
            raise WeightsUnavailableError(f"network_F: {err}. It may be a broken download: delete it (it is "
                                          "downloaded again) or put torchvision's file there") from None
    if allow_random:
        # Never reach for the network here: demos and tests must run offline and deterministically.
        return None
    try:
        return torch.hub.load_state_dict_from_url(imagenet_weights_url(use_bn), map_location="cpu",
                                                  progress=True, weights_only=True)
    except Exception as err:
        raise WeightsUnavailableError(
            f"could not get the ImageNet VGG19 weights ({err}). Download "
            f"{cached.name} from torchvision and put it at {cached}, or set network_F.weights to a local "
            "copy of torchvision's vgg19 state dict") from err


class VGGFeatureExtractor(nn.Module):
    """torchvision VGG19 `features[:feature_layer + 1]`, frozen and in eval mode; inputs are RGB in [0, 1].

    `feature_layer` None is conv5_4 before its ReLU (34, or 49 with batch norm). `state_dict` is a torchvision
    VGG19 state dict (the classifier and the layers after `feature_layer` are ignored) or one of its `features`
    alone; None keeps the random initialisation.
    """

    def __init__(self, feature_layer: int | None = None, use_bn: bool = False, use_input_norm: bool = True,
                 state_dict: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        if feature_layer is None:
            feature_layer = CONV5_4[use_bn]
        if not 0 <= feature_layer < FEATURE_LAYERS[use_bn]:
            raise ValueError(f"network_F.feature_layer: {feature_layer} is not a layer of VGG19"
                             f"{' with batch norm' if use_bn else ''} (0 to {FEATURE_LAYERS[use_bn] - 1}; conv5_4 "
                             f"is {CONV5_4[use_bn]})")
        # Only the convolutional part is built: the classifier (120M parameters) is never used.
        features = vgg_models.make_layers(vgg_models.cfgs["E"], batch_norm=use_bn)
        if state_dict is None:
            # torchvision's VGG initialisation; PyTorch's default conv init would shrink the features layer
            # after layer and leave a random-weight perceptual loss near zero.
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.features = nn.Sequential(*list(features.children())[: feature_layer + 1])
        if state_dict is not None:
            self._load(state_dict, feature_layer, use_bn)
        for param in self.features.parameters():
            param.requires_grad = False
        self.eval()

    def _load(self, state_dict: dict[str, torch.Tensor], feature_layer: int, use_bn: bool) -> None:
        """The layers up to `feature_layer` from `state_dict`; the file's deeper layers are not needed."""
        given = {k: v for k, v in _features_only(state_dict).items()
                 if not k.split(".")[0].isdigit() or int(k.split(".")[0]) <= feature_layer}
        # Batch norm fills in a missing num_batches_tracked (torchvision's vgg19_bn file predates it).
        needed = {k: v for k, v in self.features.state_dict().items()
                  if k in given or not k.endswith(".num_batches_tracked")}
        differences = describe_differences(needed, given)
        if differences:
            variant = "with batch norm (use_bn true)" if use_bn else "without batch norm (use_bn false)"
            raise ValueError(f"network_F: the weights do not fit torchvision's VGG19 {variant}: {differences}")
        self.features.load_state_dict(given, strict=True)

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        # A loss network stays in eval mode whatever the model around it does (matters with use_bn).
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        return self.features(x)


def _features_only(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys `features.N.*` (torchvision's layout) or `N.*` -> `N.*`; classifier entries dropped."""
    if all(k.split(".")[0].isdigit() for k in state_dict):
        return dict(state_dict)
    return {k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")}
