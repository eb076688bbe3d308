"""Super-resolving whole images with a generator: the one inference path of test.py, validation and upscale.py.

`super_resolve` takes LR images on the CPU and returns the SR images on the CPU. Only the network's input and
output of one tile at a time go to the device, so images larger than the GPU memory allows can be upscaled in
tiles. Options: reduced precision (autocast), channels_last memory format and the x8 geometric self-ensemble
(the "+" results of SR papers).

`read_for_inference` / `write_inference_result` are the file side for upscaling users' images: 8- and 16-bit
images, gray, RGB and RGBA; the result is written in the kind of the input (see their docstrings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ..data.imresize import imresize
from ..utils.image import read_raw, write_image

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
ENSEMBLE_SIZE = 8  # the dihedral group of the square: 4 rotations, each with and without a mirroring
# ITU-R BT.601 luma weights (what OpenCV and PIL use for RGB -> gray); a gray input gives R = G = B anyway, so
# they only average the network's small differences between the channels.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- checks
def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that `device` cannot run, before any work is done."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device, but the device is {device}: use fp32, or bf16 "
                         "(which also runs on the CPU)")
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision bf16 runs on CUDA or the CPU, not on {device}: use fp32")


def check_finite(out: torch.Tensor, precision: str) -> None:
    """Raise if the network output holds inf or NaN, rather than let them become black or white pixels."""
    if torch.isfinite(out).all():
        return
    if precision == "fp16":
        raise ValueError("the network output has non-finite values in fp16: its activations overflowed the fp16 "
                         "range (largest value 65504). Use precision bf16 (the range of fp32) or fp32; no image "
                         "was written")
    raise ValueError(f"the network output has non-finite values (precision {precision}): the weights or the input "
                     "hold inf or NaN")


# ------------------------------------------------------------------------------------------- inference
def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pose k (0-7) of the 8 flips/transpositions: bit 0 mirrors left-right, bit 1 up-down, bit 2 transposes."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x


def _inverse_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo `_dihedral(., k)`: each step is its own inverse, so they are undone in reverse order."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x


def _tiled(run: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, scale: int, tile: int,
           overlap: int) -> torch.Tensor:
    """Run `run` (LR tile on the CPU -> SR on the device) over tiles of `lq`; tile 0 is the whole image.

    Each tile is run with up to `overlap` LR pixels of its neighbours around it, and only the tile's own region
    of the output is kept: the zero padding of the convolutions then falls outside what is kept, and tiles join
    without seams once the overlap covers the reach of the padding into the image.
    """
    n, _, h, w = lq.shape
    tile_h, tile_w = (tile, tile) if tile else (h, w)
    out: torch.Tensor | None = None
    for top in range(0, h, tile_h):
        for left in range(0, w, tile_w):
            bottom, right = min(top + tile_h, h), min(left + tile_w, w)
            ctx_top, ctx_left = max(top - overlap, 0), max(left - overlap, 0)
            ctx_bottom, ctx_right = min(bottom + overlap, h), min(right + overlap, w)
            sr = run(lq[:, :, ctx_top:ctx_bottom, ctx_left:ctx_right])
            expected = ((ctx_bottom - ctx_top) * scale, (ctx_right - ctx_left) * scale)
            if tuple(sr.shape[-2:]) != expected:
                raise ValueError(f"the network turned a {ctx_right - ctx_left}x{ctx_bottom - ctx_top} input into "
                                 f"{sr.shape[-1]}x{sr.shape[-2]}, not x{scale}: the scale does not match the "
                                 "network")
            own = sr[:, :, (top - ctx_top) * scale:(bottom - ctx_top) * scale,
                     (left - ctx_left) * scale:(right - ctx_left) * scale]
            if out is None:
                out = torch.empty((n, sr.shape[1], h * scale, w * scale), dtype=torch.float32)
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = own.float().cpu()
    assert out is not None  # the loops run at least once for a non-empty image
    return out


def super_resolve(net: nn.Module, lq: torch.Tensor, scale: int, *, tile: int = 0, tile_overlap: int = 16,
                  precision: Precision = "fp32", channels_last: bool = False, self_ensemble: bool = False,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Super-resolve a batch of LR images: float (N, C, H, W) in [0, 1] -> float32 (N, C', H*scale, W*scale), both
    on the CPU. The output is not clamped (callers quantise with clamping).

    - `tile` > 0: work in tiles of at most tile x tile LR pixels, each with `tile_overlap` LR pixels of context on
      every side (cropped from the output); any image size. 0: the whole image at once.
    - `precision`: fp32; bf16 (autocast, CUDA or CPU); fp16 (autocast, CUDA only). A non-finite output raises
      (`check_finite`) instead of giving black or white images.
    - `channels_last`: run in the channels_last memory format (the network's weights are converted in place).
    - `self_ensemble`: average the outputs of the 8 flipped/transposed inputs, each transformed back (x8, the
      "+" of SR papers; 8 times the work).
    - `device`: where the network runs; default the device of its parameters (the CPU for a network without
      any). The network is moved there; it runs in eval mode and its train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else next(
        (p.device for p in net.parameters()), torch.device("cpu"))
    check_precision(precision, device)
    if lq.ndim != 4:
        raise ValueError(f"super_resolve expects an (N, C, H, W) batch, got shape {tuple(lq.shape)}")
    if tile < 0 or tile_overlap < 0:
        raise ValueError(f"tile ({tile}) and tile_overlap ({tile_overlap}) must be >= 0")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    autocast = (torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]) if precision in AUTOCAST_DTYPES
                else contextlib.nullcontext())

    def run(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, torch.float32).contiguous(memory_format=memory_format))

    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), autocast:
            lq = lq.float().cpu()
            if not self_ensemble:
                out = _tiled(run, lq, scale, tile, tile_overlap)
            else:
                out = sum(_inverse_dihedral(_tiled(run, _dihedral(lq, k), scale, tile, tile_overlap), k)
                          for k in range(ENSEMBLE_SIZE)) / ENSEMBLE_SIZE
    finally:
        net.train(was_training)
    check_finite(out, precision)
    # A plain tensor (not an inference tensor), so that callers may modify it or use it in autograd code.
    return out.clone()


# ----------------------------------------------------------------------------------------- image files
@dataclass
class ImageInfo:
    """What `write_inference_result` needs to write the result in the kind of the input file."""
    bit_depth: Literal[8, 16]
    gray: bool  # one channel: processed as RGB (replicated), written back as one channel
    alpha: np.ndarray | None  # HxW float32 in [0, 1], or None without an alpha channel


def read_for_inference(path: str | Path) -> tuple[np.ndarray, ImageInfo]:
    """An image file as float32 RGB HxWx3 in [0, 1] plus what is needed to write its result alike.

    8- and 16-bit images (scaled by 255 / 65535); gray (replicated to RGB), RGB, and RGBA (the alpha channel is
    returned in `info.alpha`, to be upscaled with `upscale_alpha`). JPEGs are turned upright by their EXIF
    orientation, as image viewers show them. Raises OSError for a file that cannot be read or decoded.
    """
    img = read_raw(path)
    bit_depth: Literal[8, 16] = 16 if img.dtype == np.uint16 else 8
    img = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2), ImageInfo(bit_depth, gray=True, alpha=None)
    alpha = np.ascontiguousarray(img[:, :, 3]) if img.shape[2] == 4 else None
    return np.ascontiguousarray(img[:, :, 2::-1]), ImageInfo(bit_depth, gray=False, alpha=alpha)


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """The alpha channel of an RGBA input, upscaled by MATLAB-bicubic `imresize` (the network sees RGB only)."""
    return np.clip(imresize(alpha.astype(np.float32), scale=float(scale)), 0.0, 1.0)


def write_inference_result(path: str | Path, rgb_sr: np.ndarray, info: ImageInfo,
                           alpha_sr: np.ndarray | None = None) -> None:
    """Write float RGB HxWx3 `rgb_sr` (clamped to [0, 1]) in the kind of the input described by `info`.

    The bit depth of the input (16-bit needs a PNG or TIFF path); one channel for a gray input (the BT.601 luma of
    the RGB result); RGBA with `alpha_sr` (from `upscale_alpha`, required when the input had alpha).
    Written atomically.
    """
    if (alpha_sr is None) != (info.alpha is None):
        raise ValueError("alpha_sr must be given exactly when the input had an alpha channel (info.alpha)")
    if alpha_sr is not None and alpha_sr.shape != rgb_sr.shape[:2]:
        raise ValueError(f"alpha_sr is {alpha_sr.shape}, the image {rgb_sr.shape[:2]}")
    if alpha_sr is not None:
        img = np.concatenate([rgb_sr, alpha_sr[:, :, None]], axis=2)
    elif info.gray:
        img = rgb_sr @ GRAY_WEIGHTS
    else:
        img = rgb_sr
    dtype = np.uint16 if info.bit_depth == 16 else np.uint8
    write_image(path, (np.clip(img, 0.0, 1.0) * float(np.iinfo(dtype).max)).round().astype(dtype))
