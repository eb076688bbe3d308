"""Parity with BasicSR 1.4.2, the field's reference implementation, on fixed inputs.

The expected numbers below were computed with BasicSR 1.4.2's own code (from its PyPI sdist, its modules loaded
one by one without the package's registry) on exactly the inputs these tests build: the bundled demo photos and
weights derived from a hash of each element's index (no random generator, so they are the same on every
platform and PyTorch version). They pin four things an independent implementation is compared on:

* PSNR and SSIM (``basicsr.metrics.psnr_ssim``, Y channel and RGB, 4 border pixels cropped);
* MATLAB-style bicubic resizing (``basicsr.utils.matlab_functions.imresize``, which works in float32);
* RRDBNet's forward pass, with the weights renamed by our BasicSR layout conversion (``basicsr.archs.rrdbnet_arch``);
* the VGG-style 128x128 discriminator in training mode (batch statistics) and eval mode, with its keys unchanged
  (``basicsr.archs.discriminator_arch.VGGStyleDiscriminator``).
"""

import numpy as np
import pytest
import torch

from esrgan.archs import layouts
from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.data.imresize import imresize
from esrgan.metrics import calculate_psnr, calculate_ssim
from esrgan.options import REPO_ROOT
from esrgan.utils.image import read_image, to_uint8

DEMO = REPO_ROOT / "datasets" / "demo"


def demo_rgb(name: str) -> np.ndarray:
    """A bundled demo photo as uint8 RGB."""
    return to_uint8(read_image(DEMO / f"{name}.png"))


def box_blurred(img: np.ndarray) -> np.ndarray:
    """3x3 mean with replicated edges, rounded half up to uint8: the distorted image the metrics compare."""
    padded = np.pad(img.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    mean = sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return np.floor(mean + 0.5).astype(np.uint8)


def hashed_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """float64 weights from a hash of each element's index and its tensor's position in the state dict:
    uniform in [-1, 1] * sqrt(3 / fan_in) for weights, [-0.01, 0.01] for biases, 1 +- 0.1 for batch-norm
    scales; batch-norm buffers as initialised."""
    state = {}
    for i, (key, value) in enumerate(net.state_dict().items()):
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            state[key] = value.clone()
            continue
        n = torch.arange(value.numel(), dtype=torch.float64)
        u = torch.frac(torch.sin(n * 12.9898 + i * 78.233).abs() * 43758.5453) * 2 - 1
        if value.dim() > 1:
            state[key] = (u * (3 / value[0].numel()) ** 0.5).view_as(value)
        elif key.endswith("weight"):
            state[key] = (1 + 0.1 * u).view_as(value)
        else:
            state[key] = (u * 0.01).view_as(value)
    return state


# (photo, Y channel) -> BasicSR's (PSNR, SSIM) of the box-blurred photo against the photo, crop_border 4.
METRICS = {
    ("val/brick", True): (37.249030321322934, 0.9740974207180233),
    ("val/brick", False): (35.92710851982541, 0.9708681520100396),
    ("train/chelsea", True): (34.89610535228981, 0.9088740115025784),
    ("train/chelsea", False): (33.45173414292746, 0.8961622896346686),
    ("train/coffee", True): (30.521752711311024, 0.8829151595347957),
    ("train/coffee", False): (29.013122950097355, 0.8633187954410569),
}


@pytest.mark.parametrize(("photo", "y_channel"), list(METRICS))
def test_psnr_and_ssim_equal_basicsr(photo, y_channel):
    hr = demo_rgb(photo)
    sr = box_blurred(hr)
    psnr, ssim = METRICS[photo, y_channel]
    # BasicSR computes Y in float32 (and everything else in float64), hence the looser bound on Y.
    tolerance = 1e-5 if y_channel else 1e-9
    assert calculate_psnr(sr, hr, crop_border=4, test_y_channel=y_channel) == pytest.approx(psnr, abs=tolerance)
    assert calculate_ssim(sr, hr, crop_border=4, test_y_channel=y_channel) == pytest.approx(ssim, abs=tolerance / 10)


# scale -> BasicSR's output shape, mean, and pixels [0, 0, R], [-1, -1, B], [h // 2, 1, G] of the chelsea crop.
IMRESIZE = {
    0.25: ((26, 20, 3), 0.5013267625027742, (0.5646334290504456, 0.15807977318763733, 0.6806086301803589)),
    4: ((404, 308, 3), 0.5053342460731578, (0.5607843399047852, 0.17062725126743317, 0.6871370673179626)),
}


@pytest.mark.parametrize("scale", list(IMRESIZE))
def test_bicubic_resize_equals_basicsr_including_the_borders(scale):
    img = demo_rgb("train/chelsea")[:101, :77].astype(np.float64) / 255
    out = imresize(img, scale)
    shape, mean, pixels = IMRESIZE[scale]
    assert out.shape == shape
    # BasicSR resizes in float32: agreement to its rounding.
    assert out.mean() == pytest.approx(mean, abs=1e-6)
    assert (out[0, 0, 0], out[-1, -1, 2], out[out.shape[0] // 2, 1, 1]) == pytest.approx(pixels, abs=1e-6)


def test_rrdbnet_with_weights_in_basicsr_layout_computes_basicsrs_output():
    # BasicSR's RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4) with hashed_weights over its own
    # state dict.
    net = RRDBNet(3, 3, nf=8, nb=2, gc=4).double().eval()
    net.load_state_dict(hashed_weights(net))
    # The hash depends on each tensor's position, so the renamed keys must keep BasicSR's order.
    modules = ["conv_first"] + [f"body.{i}.rdb{k}.conv{j}" for i in range(2) for k in (1, 2, 3) for j in range(1, 6)]
    modules += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    basicsr_keys = [f"{m}.{p}" for m in modules for p in ("weight", "bias")]
    assert list(layouts.from_esrgan(net.state_dict(), "basicsr")) == basicsr_keys
    x = (torch.sin(torch.arange(2 * 3 * 12 * 10, dtype=torch.float64) * 0.11) * 0.5 + 0.5).view(2, 3, 12, 10)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 48, 40)
    assert y.mean().item() == pytest.approx(-0.17347223834484143, abs=1e-12)
    assert [y[0, 0, 0, 0].item(), y[1, 2, -1, -1].item(), y[0, 1, 20, 17].item()] == pytest.approx(
        [-0.15195719494167984, -0.07938435059074186, -0.4006104274865751], abs=1e-12)


def test_discriminator_computes_basicsrs_vgg_style_discriminator():
    # BasicSR's VGGStyleDiscriminator(3, 8, input_size=128) has our key names; same hashed weights.
    net = Discriminator_VGG_128(in_nc=3, nf=8).double()
    net.load_state_dict(hashed_weights(net))
    x = torch.stack([torch.from_numpy(demo_rgb(f"val/{name}")[:128, :128].astype(np.float64) / 255).permute(2, 0, 1)
                     for name in ("brick", "grass")])
    with torch.no_grad():
        train_out = net.train()(x).flatten().tolist()
        running_mean = net.bn4_1.running_mean[:2].tolist()
        eval_out = net.eval()(x).flatten().tolist()
    assert train_out == pytest.approx([-0.07198012690899676, -0.9078903359135855], abs=1e-12)
    assert running_mean == pytest.approx([-0.03818144661734594, 0.01103537705389386], abs=1e-12)
    assert eval_out == pytest.approx([0.006840799994294164, 0.010573583199178149], abs=1e-12)
