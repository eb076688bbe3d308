"""Paired GT/LQ image datasets read from folders.

GT and LQ are matched by file name stem. Without an LQ folder, LQ is made from GT with MATLAB-compatible
bicubic downscaling (the convention of SR papers) and quantised to 8 bits, as a saved LR PNG would be.
Training samples are aligned random crops with flips and 90-degree rotations; evaluation samples are whole
images with GT cut to exactly `scale` times the LQ size.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.image import img2tensor, list_images, read_image
from .imresize import imresize, modcrop

MAX_LISTED = 20


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def bicubic_lq(gt: np.ndarray, scale: int) -> np.ndarray:
    """LQ of a [0, 1] float GT image as an 8-bit LR file made by MATLAB would hold it: `imresize` of the
    uint8 image by 1/scale (MATLAB rounds uint8 results after each axis), back in [0, 1]."""
    gt_u8 = np.round(gt * 255.0).astype(np.uint8)
    return imresize(gt_u8, scale=1.0 / scale).astype(np.float32) / 255.0


def augment(imgs: list[np.ndarray], hflip: bool, vflip: bool, rot90: bool) -> list[np.ndarray]:
    """Apply the same flips and transpose to every image (transpose + flips gives all 8 dihedral poses)."""
    out = []
    for img in imgs:
        if hflip:
            img = img[:, ::-1]
        if vflip:
            img = img[::-1]
        if rot90:
            img = img.transpose(1, 0, 2)
        out.append(img)
    return out


class PairedImageDataset(Dataset):
    """GT + LQ pairs from folders; GT only (LQ by bicubic on the fly); or LQ only (no GT, for upscaling)."""

    def __init__(self, name: str, scale: int, dataroot_GT: str | None, dataroot_LQ: str | None,
                 gt_size: int | None = None, use_flip: bool = False, use_rot: bool = False) -> None:
        self.name = name
        self.scale = scale
        self.gt_size = gt_size
        self.use_flip = use_flip
        self.use_rot = use_rot
        gt = {p.stem: p for p in list_images(dataroot_GT)} if dataroot_GT else {}
        lq = {p.stem: p for p in list_images(dataroot_LQ)} if dataroot_LQ else {}
        if dataroot_GT and dataroot_LQ:
            missing = sorted(set(gt) - set(lq))
            if missing:
                raise ValueError(f"dataset {name}: {len(missing)} GT images in {dataroot_GT} have no LQ image of "
                                 f"the same name in {dataroot_LQ}: {_listing(missing)}")
        self.keys = sorted(gt or lq)
        if not self.keys:
            raise ValueError(f"dataset {name}: no images found in {dataroot_GT or dataroot_LQ}")
        self.gt_paths = gt
        self.lq_paths = lq

    def __len__(self) -> int:
        return len(self.keys)

    def _load_pair(self, key: str) -> tuple[np.ndarray | None, np.ndarray]:
        gt = read_image(self.gt_paths[key]) if self.gt_paths else None
        if not self.lq_paths:
            gt = modcrop(gt, self.scale)
            return gt, bicubic_lq(gt, self.scale)
        lq = read_image(self.lq_paths[key])
        if gt is not None:
            h, w = lq.shape[:2]
            if gt.shape[0] < h * self.scale or gt.shape[1] < w * self.scale:
                raise ValueError(f"dataset {self.name}: GT {self.gt_paths[key]} is {gt.shape[1]}x{gt.shape[0]}, "
                                 f"smaller than scale {self.scale} x LQ {self.lq_paths[key]} ({w}x{h})")
            gt = gt[: h * self.scale, : w * self.scale]
        return gt, lq

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        key = self.keys[index]
        gt, lq = self._load_pair(key)
        if self.gt_size is not None:
            gt, lq = self._random_crop(key, gt, lq)
            if self.use_flip or self.use_rot:
                gt, lq = augment([gt, lq], self.use_flip and random.random() < 0.5,
                                 self.use_flip and random.random() < 0.5, self.use_rot and random.random() < 0.5)
        sample: dict[str, torch.Tensor | str] = {"LQ": img2tensor(lq), "name": key}
        if gt is not None:
            sample["GT"] = img2tensor(gt)
        return sample

    def _random_crop(self, key: str, gt: np.ndarray, lq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lq_size = self.gt_size // self.scale
        h, w = lq.shape[:2]
        if h < lq_size or w < lq_size:
            raise ValueError(f"dataset {self.name}: image {key} is too small for GT_size {self.gt_size}: its LQ "
                             f"is {w}x{h}, smaller than {lq_size}x{lq_size}")
        top, left = random.randint(0, h - lq_size), random.randint(0, w - lq_size)
        lq = lq[top: top + lq_size, left: left + lq_size]
        s = self.scale
        gt = gt[top * s: (top + lq_size) * s, left * s: (left + lq_size) * s]
        return gt, lq
