"""Paired GT/LQ image datasets read from folders or LMDBs.

GT and LQ are matched by name. Without LQ images, LQ is made from GT by MATLAB-compatible bicubic downscaling
(the convention of SR papers) and quantised to 8 bits, as a saved LR PNG would be; `cv2` bicubic is available
as an explicit alternative. All pairs are checked when the dataset is built (every GT has its LQ, GT is `scale`
times its LQ, nothing is smaller than the crop), so bad data stops a run before its first iteration.

Training samples are aligned random crops with flips and 90-degree rotations. A sampler may hand over
`(index, seed)` instead of an index: the crop and augmentation then depend on that seed only, not on which
worker process draws the sample, so a seed fixes the data exactly.
"""

from __future__ import annotations

import logging
import random
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.image import img2tensor
from ..utils.logger import RANK_LOCAL
from ..utils.misc import listing
from .imresize import bicubic_degrade, modcrop
from .sources import Backend, ImageSource, open_source

log = logging.getLogger(__name__)

Degradation = Literal["matlab_bicubic", "cv2_bicubic"]
MAX_LISTED = 20
MAX_SKIPS = 10


def _fits(gh: int, gw: int, lh: int, lw: int, factor: int) -> bool:
    """GT is `factor` x LQ, or exceeds it by less than `factor` (an HR image that was not mod-cropped: it is cut)."""
    return lh * factor <= gh < (lh + 1) * factor and lw * factor <= gw < (lw + 1) * factor


def _pair_scale(gh: int, gw: int, lh: int, lw: int) -> int | None:
    """The smallest integer factor between a GT and an LQ size, if there is one."""
    return next((f for f in range(1, 9) if _fits(gh, gw, lh, lw, f)), None)


def bicubic_lq(gt: np.ndarray, scale: int, degradation: Degradation = "matlab_bicubic") -> np.ndarray:
    """LQ of a mod-cropped [0, 1] float GT image as an 8-bit LR file would hold it, back in [0, 1].

    MATLAB's `imresize` works on the uint8 image (rounding after each axis, as MATLAB does), the LR image the
    preparation scripts write; `cv2_bicubic` is OpenCV's non-antialiased bicubic, which some projects use instead
    (it gives different PSNR figures).
    """
    gt_u8 = np.round(gt * 255.0).astype(np.uint8)
    if degradation == "cv2_bicubic":
        h, w = gt_u8.shape[:2]
        lq = cv2.resize(gt_u8, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    else:
        lq = bicubic_degrade(gt_u8, scale)
    return lq.astype(np.float32) / 255.0


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


MIN_SCORED_LQ = 3  # LQ pixels a side of an image with GT in a whole-image set: 2 are cropped before scoring


class PairedImageDataset(Dataset):
    """GT + LQ pairs; GT only (LQ by bicubic on the fly); or LQ only (no GT, for upscaling).

    `gt_size` set: training samples (random aligned crops); None: whole images with GT cut to scale x LQ,
    `scored` (with metrics that compare with the GT) or not.
    """

    def __init__(self, name: str, scale: int, dataroot_GT: str | None, dataroot_LQ: str | None,
                 gt_size: int | None = None, use_flip: bool = False, use_rot: bool = False,
                 data_type: Backend = "auto", degradation: Degradation = "matlab_bicubic",
                 skip_corrupt: bool = False, scored: bool = True) -> None:
        self.name = name
        self.scored = scored  # whole images with GT are scored against it: they must outlast the border crop
        self.scale = scale
        self.gt_size = gt_size
        self.use_flip = use_flip
        self.use_rot = use_rot
        self.degradation = degradation
        self.skip_corrupt = skip_corrupt
        self.skipped = 0
        self.reported: set[str] = set()
        self.gt: ImageSource | None = open_source(dataroot_GT, data_type) if dataroot_GT else None
        self.lq: ImageSource | None = open_source(dataroot_LQ, data_type) if dataroot_LQ else None
        self.keys = sorted((self.gt or self.lq).keys())
        if not self.keys:
            raise ValueError(f"dataset {name}: no images found in {dataroot_GT or dataroot_LQ}")
        self.lq_key = {k: k for k in self.keys}  # GT name -> LQ name
        self._check_pairs()

    def _check_pairs(self) -> None:
        """Every problem of the whole dataset in one error, before training starts."""
        errors: list[str] = []  # one entry per kind of problem, each listing its images
        keys = self._match_lq_names(errors)  # the images still to check
        gt_sizes, lq_sizes = self._sizes(keys)
        keys = self._leave_out_unreadable(keys, gt_sizes, lq_sizes, errors)
        problems, ratios = self._size_problems(keys, gt_sizes, lq_sizes)
        if problems:
            # Every pair (not only every faulty one) of one other scale: the option, not the data, is wrong.
            (ratio,) = set(ratios) if len(set(ratios)) == 1 and len(ratios) == len(keys) else (None,)
            cause = (f"every pair is x{ratio}, not x{self.scale}: check scale (and the LQ folder). " if ratio else "")
            errors.append(f"{len(problems)} images do not fit: {cause}{listing(problems, MAX_LISTED)}")
        if errors:
            raise ValueError(f"dataset {self.name}: " + "\n  and ".join(errors))

    def _match_lq_names(self, errors: list[str]) -> list[str]:
        """Pair each GT image with its LQ image (self.lq_key): the same name, or DIV2K's <name>x<scale> (as
        BasicSR's filename_tmpl '{}x4'). Returns the GT names paired; the others are described in `errors`."""
        gt, lq, s = self.gt, self.lq, self.scale
        if gt is None or lq is None:
            return self.keys
        names = set(lq.keys())
        self.lq_key = {k: k if k in names else f"{k}x{s}" for k in self.keys}
        missing = sorted(k for k, v in self.lq_key.items() if v not in names)
        shared = sorted(k for k, v in self.lq_key.items() if v != k and v in self.lq_key)
        if shared:  # 'a' would pair with 'ax4', the LQ of the GT image named 'ax4'
            errors.append(f"GT images {listing(shared, MAX_LISTED)} in {gt.root} have no LQ of the same name in "
                          f"{lq.root}, and their DIV2K-style LQ names <name>x{s} are GT images of their own; name "
                          "the LQ images as the GT images")
        if missing:
            others = sorted({f for k in missing for f in range(2, 9) if f != s and f"{k}x{f}" in names})
            hint = (f"; they are there as <name>x{others[0]}: check scale" if len(others) == 1 else "")
            errors.append(f"{len(missing)} GT images in {gt.root} have no LQ image of the same name (or DIV2K's "
                          f"<name>x{s}) in {lq.root}{hint}: {listing(missing, MAX_LISTED)}")
        return sorted(set(self.keys) - set(shared) - set(missing))

    def _sizes(self, keys: list[str]) -> tuple[dict[str, tuple[int, int] | None], dict[str, tuple[int, int] | None]]:
        """(height, width) of every GT image and of the LQ image of each of `keys` (GT size / scale when LQ is
        made on the fly), from the file headers; None for a header that cannot be read."""
        s = self.scale
        gt_sizes = self.gt.sizes() if self.gt is not None else {}
        if self.lq is None:
            return gt_sizes, {k: v and (v[0] // s, v[1] // s) for k, v in gt_sizes.items()}
        all_lq = self.lq.sizes()
        return gt_sizes, {k: all_lq.get(self.lq_key[k]) for k in keys}

    def _leave_out_unreadable(self, keys: list[str], gt_sizes: dict, lq_sizes: dict, errors: list[str]) -> list[str]:
        """`keys` without the images whose headers cannot be read: an error, or with skip_corrupt a warning (and
        they leave the dataset too)."""
        gt, lq = self.gt, self.lq
        unreadable = [gt.describe(k) for k in keys if gt is not None and gt_sizes.get(k) is None]
        unreadable += [lq.describe(self.lq_key[k]) for k in keys if lq is not None and lq_sizes[k] is None]
        if not unreadable:
            return keys
        keys = [k for k in keys if (gt is None or gt_sizes[k] is not None) and lq_sizes[k] is not None]
        if not self.skip_corrupt:
            errors.append(f"{len(unreadable)} images cannot be read: {listing(unreadable, MAX_LISTED)} (or set "
                          "skip_corrupt: true to leave them out)")
        else:
            log.warning("dataset %s: leaving out %d unreadable images: %s", self.name, len(unreadable),
                        listing(unreadable, MAX_LISTED))
            self.keys = keys
            if not self.keys:
                errors.append("no readable images left")
        return keys

    def _size_problems(self, keys: list[str], gt_sizes: dict, lq_sizes: dict) -> tuple[list[str], list[int | None]]:
        """What is wrong with the sizes of each pair of `keys` (GT not scale x LQ, too small for the patch or to
        score), and for each pair that does not fit, the scale it has (None: none)."""
        gt, lq, s = self.gt, self.lq, self.scale
        problems, ratios = [], []
        for key in keys:
            lh, lw = lq_sizes[key]
            if key in gt_sizes:
                gh, gw = gt_sizes[key]
                if not _fits(gh, gw, lh, lw, s):
                    where = f"{gt.describe(key)} is {gw}x{gh}"
                    if lq is not None:
                        where += f", {lq.describe(self.lq_key[key])} is {lw}x{lh}"
                    problems.append(f"{key} ({where}; GT must be {s} x LQ)")
                    ratios.append(_pair_scale(gh, gw, lh, lw))
                    continue
            if self.gt_size is not None and min(lh, lw) < self.gt_size // s:
                name = lq.describe(self.lq_key[key]) if lq is not None else gt.describe(key)
                problems.append(f"{name} is too small for GT_size {self.gt_size}: its LQ is {lw}x{lh}, smaller "
                                f"than {self.gt_size // s}x{self.gt_size // s}")
            elif self.gt_size is None and key in gt_sizes:  # a whole image with GT (gh, gw from above)
                if self.scored and min(lh, lw) < MIN_SCORED_LQ:
                    # Scored with `s` border pixels of the x`s` result cropped on each side (SR papers' convention).
                    problems.append(f"{key} is too small to score: its GT is {gw}x{gh}, so its LQ is {lw}x{lh} (the "
                                    f"scores crop {s} pixels at each border of the x{s} result); it needs an LQ of "
                                    f"at least {MIN_SCORED_LQ}x{MIN_SCORED_LQ}")
                elif min(lh, lw) < 1:
                    problems.append(f"{key} is smaller than the scale: its GT is {gw}x{gh}, so its LQ would be "
                                    f"{lw}x{lh}")
        return problems, ratios

    def __len__(self) -> int:
        return len(self.keys)

    def _load_pair(self, key: str) -> tuple[np.ndarray | None, np.ndarray]:
        gt = self.gt.read(key) if self.gt is not None else None
        if self.lq is None:
            gt = modcrop(gt, self.scale)
            return gt, bicubic_lq(gt, self.scale, self.degradation)
        lq = self.lq.read(self.lq_key[key])
        if gt is not None:
            h, w = lq.shape[:2]
            gt = gt[: h * self.scale, : w * self.scale]
        return gt, lq

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        rng = random.Random(seed) if seed is not None else random
        for _ in range(MAX_SKIPS + 1):
            key = self.keys[index]
            try:
                gt, lq = self._load_pair(key)
                break
            except OSError as err:
                self._skip(key, err)
                index = rng.randrange(len(self.keys))
        else:
            raise OSError(f"dataset {self.name}: {MAX_SKIPS + 1} unreadable images in a row; check the data")
        if self.gt_size is not None:
            # The sizes were checked at the start, from the files' headers; an image replaced since may not fit.
            problems, _ = self._size_problems([key], {} if gt is None else {key: gt.shape[:2]}, {key: lq.shape[:2]})
            if problems:
                raise ValueError(f"dataset {self.name}: an image changed since the run started: {problems[0]}")
            gt, lq = self._random_crop(rng, gt, lq)
            if self.use_flip or self.use_rot:
                # As the original code: the horizontal flip comes with use_flip, the vertical flip and the
                # transpose with use_rot (together: the 90-degree rotations).
                gt, lq = augment([gt, lq], self.use_flip and rng.random() < 0.5,
                                 self.use_rot and rng.random() < 0.5, self.use_rot and rng.random() < 0.5)
        return _sample(key, gt, lq)

    def whole_image(self, index: int) -> dict[str, torch.Tensor | str] | None:
        """Image `index` of a whole-image set; None when it cannot be read and skip_corrupt is set. The caller
        leaves it out: a set scores each of its images once, where a training sample takes another's place."""
        assert self.gt_size is None, "whole_image: this dataset crops training patches"
        key = self.keys[index]
        try:
            gt, lq = self._load_pair(key)
        except OSError as err:
            self._skip(key, err)
            return None
        return _sample(key, gt, lq)

    def none_read(self) -> ValueError:
        """The error for a whole-image set of which skip_corrupt left out every image."""
        return ValueError(f"dataset {self.name}: none of its {len(self)} images could be read (skip_corrupt left "
                          "each out, see the warnings above); check the data")

    def _skip(self, key: str, err: OSError) -> None:
        """Count and report an image that cannot be read, with skip_corrupt; without it, raise."""
        if not self.skip_corrupt:
            raise OSError(f"dataset {self.name}: {err} (set skip_corrupt: true in the dataset options to skip "
                          "unreadable images)") from err
        self.skipped += 1
        if key not in self.reported:  # a training set draws it again every epoch
            self.reported.add(key)
            log.warning("dataset %s: skipped unreadable image %s (%d skipped so far in this process, each image "
                        "reported once): %s", self.name, key, self.skipped, err, extra=RANK_LOCAL)

    def _random_crop(self, rng: random.Random, gt: np.ndarray, lq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lq_size = self.gt_size // self.scale
        h, w = lq.shape[:2]
        top, left = rng.randint(0, h - lq_size), rng.randint(0, w - lq_size)
        lq = lq[top: top + lq_size, left: left + lq_size]
        s = self.scale
        gt = gt[top * s: (top + lq_size) * s, left * s: (left + lq_size) * s]
        return gt, lq


def _sample(key: str, gt: np.ndarray | None, lq: np.ndarray) -> dict[str, torch.Tensor | str]:
    sample: dict[str, torch.Tensor | str] = {"LQ": img2tensor(lq), "name": key}
    if gt is not None:
        sample["GT"] = img2tensor(gt)
    return sample
