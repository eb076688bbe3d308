"""MATLAB-compatible bicubic ``imresize`` for building SR training and test pairs.

Super-resolution benchmarks (Set5, Set14, DIV2K, ...) define their low-resolution inputs as
MATLAB's ``imresize(hr, 1/scale, 'bicubic')``. OpenCV's and PIL's bicubic resizers differ from it
(different cubic coefficient, no antialiasing, other pixel-centre conventions), and LR images made
with them are not the benchmark inputs, so this module reproduces MATLAB's algorithm:

* Keys' cubic kernel with ``a = -0.5``;
* when downscaling with antialiasing (MATLAB's default) the kernel is stretched by ``1/scale``
  (support ``4/scale`` input pixels) and its height scaled by ``scale``;
* output size ``ceil(scale * input size)``;
* output pixel ``x`` (1-based) samples the input at ``u = x/scale + 0.5 * (1 - 1/scale)``, which keeps
  the image centres aligned;
* samples outside the image are taken from the image mirrored at its borders (edge pixel repeated,
  the symmetric padding of current MATLAB releases; some older releases clamped to the edge pixel
  instead), and the weights of each output pixel are normalised to sum to 1;
* the two image axes are resized one after the other, the one with the smaller scale first.

For every axis the taps and mirrored indices are folded into one dense ``(out_len, in_len)`` matrix,
so a resize is two matrix products. Integer images are rounded back to their own type after each
axis, because MATLAB's per-axis resampler returns an array of the input class.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# MATLAB's bicubic kernel spans 4 input pixels (2 on each side of the sample position).
_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (the kernel of MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return np.where(ax <= 1.0, inner, np.where(ax <= 2.0, outer, 0.0))


def _weight_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    """Dense (out_len, in_len) resampling matrix for one axis, MATLAB's ``contributions``."""
    if scale < 1.0 and antialiasing:
        # Stretching the kernel by 1/scale low-pass filters the input before decimation.
        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)

        kernel_width = _KERNEL_WIDTH / scale
    else:
        kernel = _cubic
        kernel_width = _KERNEL_WIDTH

    # 1-based output coordinates mapped to 1-based input coordinates, as in MATLAB.
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    # MATLAB takes two taps more than the kernel support; the extra ones get zero weight.
    num_taps = math.ceil(kernel_width) + 2
    taps = left[:, None] + np.arange(num_taps)[None, :]
    weights = kernel(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)

    # Symmetric padding: the index sequence 1..n, n..1 repeated, so index 0 maps to 1 and n+1 to n.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    columns = mirror[np.mod(taps.astype(np.int64) - 1, 2 * in_len)]

    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], columns.shape)
    # Several taps can land on the same input pixel after mirroring; their weights add up.
    np.add.at(matrix, (rows, columns), weights)
    return matrix


def _round_like_matlab(values: np.ndarray, max_value: int) -> np.ndarray:
    """Saturate and round half away from zero, as MATLAB's double-to-integer conversion does."""
    # After clipping all values are >= 0, where floor(v + 0.5) is rounding half away from zero.
    return np.floor(np.clip(values, 0.0, float(max_value)) + 0.5)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """Resize ``img`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: HxW or HxWxC array of dtype uint8, uint16, float32 or float64.
        scale: Resize factor applied to both axes; the output is ``ceil(h*scale) x ceil(w*scale)``.
        output_shape: ``(out_h, out_w)``; the per-axis scales are then ``out/in``.
            Exactly one of ``scale`` and ``output_shape`` must be given.
        antialiasing: Widen the kernel when downscaling (MATLAB's default ``'Antialiasing', true``).

    Returns:
        The resized image with the dtype of ``img``. Integer images are saturated to their range
        and rounded half away from zero; float images are neither clipped nor rounded.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale and output_shape")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC image, got shape {img.shape}")
    if img.size == 0:
        raise ValueError(f"imresize got an empty image of shape {img.shape}")
    if img.dtype in (np.uint8, np.uint16):
        max_value: int | None = int(np.iinfo(img.dtype).max)
    elif np.issubdtype(img.dtype, np.floating):
        max_value = None
    else:
        raise TypeError(f"imresize supports uint8, uint16 and float images, got dtype {img.dtype}")

    in_shape = img.shape[:2]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = (math.ceil(scale * in_shape[0]), math.ceil(scale * in_shape[1]))
    else:
        if len(output_shape) != 2 or any(int(s) != s or s <= 0 for s in output_shape):
            raise ValueError(f"imresize output_shape must be two positive integers, got {output_shape}")
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])

    out = img.astype(np.float64)
    if img.ndim == 2:
        out = out[:, :, None]
    # MATLAB resizes along the axis with the smaller scale first (a stable sort: rows on ties),
    # which makes the intermediate image as small as possible.
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        matrix = _weight_matrix(in_shape[axis], out_shape[axis], scales[axis], antialiasing)
        if axis == 0:
            out = np.tensordot(matrix, out, axes=1)
        else:
            # One large matrix product (h, c, w) x (w, out_w) instead of h small ones.
            out = np.moveaxis(np.tensordot(out, matrix, axes=([1], [1])), 2, 1)
        if max_value is not None:
            out = _round_like_matlab(out, max_value)

    if img.ndim == 2:
        out = out[:, :, 0]
    return out.astype(img.dtype)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right edges of ``img`` so that height and width are multiples of ``scale``."""
    if scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def bicubic_degrade(img: np.ndarray, scale: int) -> np.ndarray:
    """Make the standard bicubic LR image: mod-crop ``img`` and downscale it by ``1/scale``.

    This is the degradation of the SR benchmarks, ``imresize(modcrop(hr, s), 1/s, 'bicubic')``.
    """
    hr = modcrop(img, scale)
    h, w = hr.shape[:2]
    # Passing the exact output size gives the per-axis scale (h/s)/h, the same double as 1/s.
    return imresize(hr, output_shape=(h // scale, w // scale))


def imresize_torch(x: "torch.Tensor", scale: float, antialiasing: bool = True) -> "torch.Tensor":
    """MATLAB bicubic resize of a float tensor ``(..., H, W)`` (CHW, NCHW) on its own device.

    The same per-axis weight matrices as :func:`imresize`, applied as two batched matrix products; values are
    neither rounded nor clipped (the float path of ``imresize``). For degrading or resizing batches on the GPU
    in one's own code; the training data is degraded on the CPU, in the loader's workers.
    """
    import torch

    if not x.is_floating_point():
        raise TypeError(f"imresize_torch expects a float tensor, got {x.dtype}")
    if not scale > 0:
        raise ValueError(f"imresize_torch scale must be positive, got {scale}")
    h, w = x.shape[-2:]
    out_h, out_w = math.ceil(scale * h), math.ceil(scale * w)
    # Both axes share the scale, so MATLAB's order (smaller scale first) is rows then columns.
    rows = torch.from_numpy(_weight_matrix(h, out_h, scale, antialiasing)).to(x.device, torch.float64)
    cols = torch.from_numpy(_weight_matrix(w, out_w, scale, antialiasing)).to(x.device, torch.float64)
    return (rows @ x.double() @ cols.T).to(x.dtype)
