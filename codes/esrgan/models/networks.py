"""Option names -> networks, and loading weights into them with errors that list what does not fit."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..archs.discriminator import Discriminator_VGG_128
from ..archs.layouts import (
    DISCRIMINATOR_PARTS,
    describe_differences,
    describe_hparams,
    detect_layout,
    infer_hparams,
    load_generator_state,
    read_weights_file,
    select_part,
)
from ..archs.rrdbnet import RRDBNet
from ..archs.vgg import VGGFeatureExtractor, load_vgg_state_dict, torchvision_cache_file
from ..options import NetworkDOpt, NetworkFOpt, NetworkGOpt

log = logging.getLogger(__name__)

GENERATORS = {"RRDBNet": RRDBNet}
DISCRIMINATORS = {"discriminator_vgg_128": Discriminator_VGG_128}


def build_generator(o: NetworkGOpt, scale: int) -> nn.Module:
    return GENERATORS[o.which_model_G](in_nc=o.in_nc, out_nc=o.out_nc, nf=o.nf, nb=o.nb, gc=o.gc, scale=scale)


def build_discriminator(o: NetworkDOpt) -> nn.Module:
    return DISCRIMINATORS[o.which_model_D](in_nc=o.in_nc, nf=o.nf)


def build_feature_extractor(o: NetworkFOpt) -> tuple[VGGFeatureExtractor, bool]:
    """The frozen VGG and whether its weights are random (allowed only by network_F.allow_random_weights)."""
    state = load_vgg_state_dict(o.weights, o.use_bn, o.allow_random_weights)
    if state is None:
        why = ("network_F.weights is random" if o.weights == "random" else
               f"the ImageNet VGG19 weights are not at {torchvision_cache_file(o.use_bn)} and "
               "network_F.allow_random_weights is true")
        log.warning("network_F: %s, so the perceptual loss uses a RANDOMLY initialised VGG19. Fine for a demo, "
                    "meaningless for real training.", why)
    net = VGGFeatureExtractor(o.feature_layer, o.use_bn, o.use_input_norm, state_dict=state)
    return net, state is None


def read_state_dict(path: str | Path, generator: bool = True) -> dict[str, torch.Tensor]:
    """Load a weights file safely (no arbitrary unpickling; .pth or .safetensors) and unwrap the common containers.

    A generator's weights in any published ESRGAN layout (ours, old arch, BasicSR) come back under our keys, from
    the generator's part of a whole-model file; a discriminator's (`generator` False) keep their keys, from the
    discriminator's part. Nothing is required to be complete here: load_weights compares the keys with the
    network's.
    """
    if not generator:
        state, used = read_weights_file(path)
        state, part = select_part(state, DISCRIMINATOR_PARTS)
        log.info("%s: %s%s", path, used, part)
        return state
    state, hparams, description = load_generator_state(path, complete=False)
    log.info("%s: %s, %s", path, description, describe_hparams(hparams))
    return state


def infer_generator_options(path: str | Path) -> dict[str, int]:
    """in_nc, out_nc, nf, nb, gc and scale of the generator weights in `path` (any published layout)."""
    return load_generator_state(path, complete=False)[1]


def load_weights(net: nn.Module, path: str | Path, strict: bool = True, what: str = "network") -> None:
    """Load `path` into `net`; a mismatch names the missing, unexpected and wrongly shaped keys (and, for a
    generator, the sizes the file implies). With `strict` False, keys on one side only are left out, with a
    warning that says which."""
    generator = isinstance(net, tuple(GENERATORS.values()))
    state = read_state_dict(path, generator)
    own = net.state_dict()
    shared_nothing = not own.keys() & state.keys()  # refused even without strict_load: nothing would load
    differences = describe_differences(own, state, keys=strict or shared_nothing)
    if differences:
        if generator:
            hint = (f"The file holds {describe_hparams(infer_hparams(state))}: set the network_G options and "
                    "scale to match (in a test option file, leave nf, nb and gc out, or set them to ~, to read "
                    "them from the weights).")
        elif _is_generator_file(state):
            hint = "It is a generator's file: give a discriminator's (models/<iter>_D.pth) here."
        else:
            hint = "Check the network options against the file."
        raise ValueError(f"the weights in {path} do not fit the configured {what} ({type(net).__name__}): "
                         f"{differences}. {hint}")
    left_out = describe_differences(own, state)
    if left_out:
        log.warning("%s: strict_load is false, so these are left out (the network keeps its initial values for "
                    "missing keys): %s", path, left_out)
    net.load_state_dict(state, strict=strict)


def _is_generator_file(state: dict[str, torch.Tensor]) -> bool:
    try:
        detect_layout(state)
    except ValueError:
        return False
    return True
