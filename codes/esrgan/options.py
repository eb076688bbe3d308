"""YAML option files -> typed, validated options.

Every option, its default and its documentation live in the dataclasses below, and nowhere else. Parsing
rejects unknown keys (with the nearest valid name), wrong types and out-of-range values, naming the full key
path; cross-field checks run before anything is built. `--set a.b=value` overrides are applied to the raw
YAML first, so they are validated like the file. Relative paths resolve against the repository root (the
current directory for a copy installed without the repository).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

_CHECKOUT = Path(__file__).resolve().parents[2]
# Relative paths in option files resolve against the repository (run from a checkout, or `pip install -e .`). A
# copy installed without the repository (plain `pip install .`) has none: they resolve against the current
# directory then, rather than somewhere inside site-packages.
IN_CHECKOUT = (_CHECKOUT / "codes" / "esrgan" / "options.py").is_file()
REPO_ROOT = _CHECKOUT if IN_CHECKOUT else Path.cwd()
ROOT_NAME = f"the repository root {REPO_ROOT}" if IN_CHECKOUT else f"the current directory {REPO_ROOT}"


class OptionError(ValueError):
    """An option file or override is invalid; the message names the key and says what to do."""


class OptionListError(OptionError):
    """Several problems of one option tree, so that one run lists them all."""

    def __init__(self, messages: list[str], what: str = "problems with the options") -> None:
        self.messages, self.what = messages, what
        super().__init__(messages[0] if len(messages) == 1 else
                         f"{len(messages)} {what}:\n  " + "\n  ".join(messages))


def _messages(err: OptionError) -> list[str]:
    return err.messages if isinstance(err, OptionListError) else [str(err)]


def opt(default: Any = dataclasses.MISSING, doc: str = "", *, lo: float | None = None, hi: float | None = None,
        path: bool = False, factory: Any = dataclasses.MISSING, pattern: tuple[str, str] | None = None) -> Any:
    """A documented option field. `lo`/`hi` bound numbers (inclusive); `path` marks repo-relative paths;
    `pattern` is (a regular expression a string must match whole, what a value that does not is told)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "path": path, "pattern": pattern}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# The devices an option file may name; whether one is there is checked where it is used.
DEVICE = ("auto|cpu|cuda(:(0|[1-9][0-9]*))?", "is not a device; use auto, cpu, cuda or cuda:N")


# --------------------------------------------------------------------------------------------- networks
@dataclass
class NetworkGOpt:
    which_model_G: Literal["RRDBNet"] = opt("RRDBNet", "generator architecture")
    in_nc: int = opt(3, "input channels (3: training reads RGB)", lo=1, hi=64)
    out_nc: int = opt(3, "output channels (3: training reads RGB)", lo=1, hi=64)
    nf: int = opt(64, "feature channels of the trunk", lo=1, hi=1024)
    nb: int = opt(23, "number of RRDB blocks", lo=1, hi=1000)
    gc: int = opt(32, "growth channels inside each dense block", lo=1, hi=1024)


@dataclass
class NetworkDOpt:
    which_model_D: Literal["discriminator_vgg_128"] = opt("discriminator_vgg_128",
                                                          "discriminator architecture (128x128 input)")
    in_nc: int = opt(3, "input channels (3: training reads RGB)", lo=1, hi=64)
    nf: int = opt(64, "channels of the first conv; later stages use 2x, 4x, 8x, 8x", lo=1, hi=512)
    sync_bn: bool = opt(False, "multi-GPU: batch-norm statistics over the whole batch of all processes "
                               "(SyncBatchNorm) instead of each process's own share")


@dataclass
class NetworkFOpt:
    feature_layer: int | None = opt(None, "last VGG19 `features` index used; ~: conv5_4 before its ReLU, the "
                                          "paper's layer (34 in the plain VGG19, 49 with use_bn)", lo=0)
    use_bn: bool = opt(False, "use VGG19 with batch norm (the paper uses the plain one)")
    use_input_norm: bool = opt(True, "normalise [0,1] RGB inputs with the ImageNet mean and std")
    weights: str = opt("imagenet", "'imagenet' (torchvision's weights in the torch cache, downloaded if "
                                   "missing), the path of a torchvision VGG19 state dict, or 'random' (needs "
                                   "allow_random_weights)")
    allow_random_weights: bool = opt(False, "only for demos and tests: if the ImageNet weights are not in the "
                                            "cache, use a randomly initialised VGG (with a warning) instead of "
                                            "stopping")


# --------------------------------------------------------------------------------------------- metrics
MetricName = Literal["psnr", "ssim", "niqe", "lpips"]


@dataclass
class MetricOptions:
    niqe_channel: Literal["y", "gray"] = opt("y", "channel NIQE scores: y (rgb2ycbcr's Y, as the PIRM challenge "
                                                  "and ESRGAN's perceptual index) or gray (rgb2gray, as the NIQE "
                                                  "release's computequality.m)")
    lpips_net: Literal["alex", "vgg", "squeeze"] = opt("alex", "LPIPS backbone (alex: the LPIPS authors' default)")
    lpips_weights: str | None = opt(None, "torchvision ImageNet state dict of the LPIPS backbone (e.g. "
                                          "alexnet-owt-7be5be79.pth); ~: torchvision's file in the torch cache "
                                          "(<TORCH_HOME>/hub/checkpoints); nothing is downloaded", path=True)


# --------------------------------------------------------------------------------------------- datasets
@dataclass
class DatasetOpt:
    name: str = opt("", "a label for logs and result folders (defaults to the dataset's key)")
    dataroot_GT: str | None = opt(None, "folder (or .lmdb) of ground-truth (HR) images", path=True)
    dataroot_LQ: str | None = opt(None, "folder (or .lmdb) of low-quality (LR) images named as the GT images "
                                        "(or DIV2K's way, <name>x<scale>); "
                                        "leave empty to make them from GT by bicubic x1/scale",
                                  path=True)
    data_type: Literal["auto", "folder", "lmdb"] = opt("auto", "how the dataroots are read: image folders or "
                                                               "LMDBs; auto: LMDB for paths ending in .lmdb or "
                                                               "holding data.mdb")
    degradation: Literal["matlab_bicubic", "cv2_bicubic"] = opt(
        "matlab_bicubic", "how LQ is made when there is no dataroot_LQ: MATLAB-compatible bicubic (the SR "
                          "papers' convention) or OpenCV's bicubic (no antialiasing)")
    skip_corrupt: bool = opt(False, "leave out images that cannot be decoded (with a counted warning) instead "
                                    "of stopping")


@dataclass
class TestSetOpt(DatasetOpt):
    metrics: list[MetricName] = opt(factory=lambda: ["psnr", "ssim"],
                                    doc="metrics of this set, of psnr, ssim (Y channel), niqe (no-reference, also "
                                        "without GT), lpips (needs pip install lpips and its backbone weights); "
                                        "each is also computed for the bicubic baseline")
    ma_scores: str | None = opt(None, "CSV (columns name, ma) of Ma et al.'s scores of this set's SR images, "
                                      "computed elsewhere (Ma's model runs in MATLAB); with niqe in metrics it "
                                      "adds the perceptual index PI = ((10 - Ma) + NIQE) / 2", path=True)


@dataclass
class TrainSetOpt(DatasetOpt):
    GT_size: int = opt(128, "size of the square GT training patch; the LQ patch is GT_size/scale", lo=4)
    use_flip: bool = opt(True, "random horizontal flips")
    use_rot: bool = opt(True, "random vertical flips and transpositions (the 90-degree rotations); with use_flip "
                              "all eight rotations and mirrorings, as in the original code")
    batch_size: int = opt(16, "patches per iteration (per process)", lo=1)
    n_workers: int = opt(4, "data-loader worker processes (0 loads in the training process)", lo=0)
    use_shuffle: bool = opt(True, "shuffle the images every epoch")
    dataset_enlarge_ratio: int = opt(1, "one epoch visits every image this many times (keeps the workers of "
                                        "small datasets busy)", lo=1)


@dataclass
class TrainDatasetsOpt:
    train: TrainSetOpt = opt(factory=TrainSetOpt, doc="the training set")
    val: DatasetOpt | None = opt(None, "the validation set (whole images); leave out to skip validation")


# --------------------------------------------------------------------------------------------- training
PixelCriterion = Literal["l1", "l2", "charbonnier"]  # the loss functions are in losses.py
FeatureCriterion = Literal["l1", "l2"]
GanType = Literal["gan", "ragan", "lsgan"]


@dataclass
class OptimOpt:
    lr: float = opt(1e-4, "Adam learning rate", lo=0)
    beta1: float = opt(0.9, "Adam beta1, below 1", lo=0, hi=0.999999)
    beta2: float = opt(0.999, "Adam beta2, below 1 (the paper and the 2018 code: 0.999; mmsr and BasicSR: 0.99)",
                       lo=0, hi=0.999999)
    weight_decay: float = opt(0.0, "Adam weight decay", lo=0)


@dataclass
class PsnrOptimOpt(OptimOpt):
    lr: float = opt(2e-4, "Adam learning rate (the paper's 2e-4 for the PSNR-oriented model)", lo=0)


@dataclass
class SchedulerOpt:
    type: Literal["MultiStepLR", "CosineAnnealingRestartLR"] = opt("MultiStepLR", "learning-rate schedule")
    milestones: list[int] = opt(factory=list, doc="MultiStepLR: iterations (counted from the start of the "
                                                  "phase) at which the lr is multiplied by gamma", lo=1)
    gamma: float = opt(0.5, "MultiStepLR: the factor applied at each milestone", lo=0)
    periods: list[int] = opt(factory=list, doc="CosineAnnealingRestartLR: length of each cosine cycle, in "
                                               "iterations", lo=1)
    restart_weights: list[float] = opt(factory=list, doc="CosineAnnealingRestartLR: each cycle starts at "
                                                         "eta_min + weight * (lr - eta_min), as in BasicSR "
                                                         "(default 1 for every cycle)", lo=0)
    eta_min: float = opt(1e-7, "CosineAnnealingRestartLR: the lowest lr", lo=0)
    warmup_iters: int = opt(0, "linear lr warm-up over the first warmup_iters iterations of the phase (0: none)",
                            lo=0)


@dataclass
class PsnrPhaseOpt:
    niter: int = opt(0, "iterations of the PSNR-oriented phase (L1 only) before the GAN phase; for model 'sr' "
                        "this is the whole run", lo=0)
    pixel_criterion: PixelCriterion = opt("l1", "pixel loss of the PSNR phase")
    optim_G: PsnrOptimOpt = opt(factory=PsnrOptimOpt, doc="Adam of G in the PSNR phase")
    scheduler: SchedulerOpt = opt(factory=SchedulerOpt, doc="lr schedule of the PSNR phase")


@dataclass
class GanPhaseOpt:
    niter: int = opt(0, "iterations of the GAN phase (after the PSNR phase)", lo=0)
    pixel_criterion: PixelCriterion = opt("l1", "pixel loss of the GAN phase")
    pixel_weight: float = opt(1e-2, "w_pix (the paper's eta)", lo=0)
    feature_criterion: FeatureCriterion = opt("l1", "distance between VGG features of SR and GT")
    feature_weight: float = opt(1.0, "w_fea; 0 disables the perceptual loss and the VGG network", lo=0)
    gan_type: GanType = opt("ragan", "adversarial loss: ragan (relativistic average, "
                                                              "the paper), gan (BCE), lsgan (least squares)")
    gan_weight: float = opt(5e-3, "w_gan (the paper's lambda)", lo=0)
    D_update_ratio: int = opt(1, "G is updated every D_update_ratio-th GAN-phase iteration", lo=1)
    D_init_iters: int = opt(0, "GAN-phase iterations at the start that update D only", lo=0)
    optim_G: OptimOpt = opt(factory=OptimOpt, doc="Adam of G in the GAN phase (a fresh optimizer)")
    optim_D: OptimOpt = opt(factory=OptimOpt, doc="Adam of D")
    scheduler: SchedulerOpt = opt(factory=SchedulerOpt, doc="lr schedule of the GAN phase, for G and D")


@dataclass
class TrainOpt:
    manual_seed: int = opt(0, "seed of Python, NumPy and torch RNGs (data order, crops, init)", lo=0,
                           hi=2**32 - 1)
    psnr: PsnrPhaseOpt = opt(factory=PsnrPhaseOpt, doc="phase 1: PSNR-oriented pre-training")
    gan: GanPhaseOpt = opt(factory=GanPhaseOpt, doc="phase 2: RaGAN + perceptual + pixel loss")
    val_freq: int = opt(5000, "validate every val_freq iterations (and at the end of each phase)", lo=1)
    val_tile: int = opt(0, "validate large images in tiles of this many LR pixels (0: whole images)", lo=0)
    val_tile_overlap: int = opt(16, "with val_tile: LR pixels of context around each tile, as test.tile_overlap; "
                                    "tiled scores equal whole-image scores only once it covers the network's "
                                    "reach", lo=0)
    ema_decay: float = opt(0.0, "keep an exponential moving average of G with this decay (e.g. 0.999), used for "
                                "validation and saved as the deployable generator (the GAN phase starts from it); 0 "
                                "disables it", lo=0, hi=0.999999)
    dist_timeout: int = opt(1800, "multi-process runs: seconds a process waits for the others (at start-up, in "
                                  "collectives, while rank 0 saves) before giving up", lo=1)
    val_metrics: list[MetricName] = opt(factory=lambda: ["psnr", "ssim"],
                                        doc="validation metrics (psnr is required: it picks the best model), "
                                            "logged as val/<metric> in TensorBoard next to val/<metric>_bicubic")
    val_niqe_every: int = opt(1, "with niqe in val_metrics: compute NIQE at every val_niqe_every-th validation "
                                 "(and the last), to save time on large validation sets (NIQE takes about 45 ms "
                                 "per 512x512 image on one CPU core)", lo=1)
    max_nonfinite: int = opt(100, "a step with a non-finite loss is skipped and counted; stop after this many "
                                  "consecutive skips", lo=1)


@dataclass
class TrainPathOpt:
    experiments_root: str = opt("experiments", "runs are written to <experiments_root>/<name>/", path=True)
    pretrain_model_G: str | None = opt(None, "generator weights to start from (e.g. the PSNR model)", path=True)
    pretrain_model_D: str | None = opt(None, "discriminator weights to start from", path=True)
    strict_load: bool = opt(True, "pretrained weights must match the network key for key")
    resume_state: str | None = opt(None, "a training_state/<iter>.state file to continue from", path=True)


@dataclass
class LoggerOpt:
    print_freq: int = opt(100, "log the losses averaged over print_freq iterations (and those of the PSNR phase's "
                               "last iterations at the switch), s/it and the data-wait share (validation and "
                               "saving left out)", lo=1)
    save_freq: int = opt(5000, "save checkpoints every save_freq iterations (and at the end of each phase)", lo=1)
    use_tb_logger: bool = opt(True, "write TensorBoard event files to <run>/tb_logger")
    tb_images: int = opt(4, "validation images shown in TensorBoard (SR next to GT)", lo=0)
    save_safetensors: bool = opt(False, "also write models/latest_G.safetensors (needs pip install safetensors), "
                                        "with the architecture and scale in its metadata")
    keep_last: int = opt(0, "keep only the newest keep_last checkpoints (pruned after the one just saved is "
                            "complete; the checkpoint of the PSNR phase's end is kept too); 0 keeps all", lo=0)


@dataclass
class SpeedOpt:
    precision: Literal["fp32", "bf16", "fp16"] = opt("fp32", "autocast precision of the forward passes: fp32, "
                                                              "bf16 (CUDA, or CPU), fp16 (CUDA; with a gradient "
                                                              "scaler per network)")
    channels_last: bool = opt(False, "channels_last memory format for G, D, VGG and the batches")
    compile: bool = opt(False, "torch.compile the networks (slow first iterations while it compiles)")
    cuda_graph: bool = opt(False, "CUDA: capture each kind of training step whole in a CUDA graph after 3 eager "
                                  "warm-up iterations and replay it (one launch per step instead of thousands); "
                                  "with compile, the compiled kernels are captured; fp16 and several processes "
                                  "run eagerly instead, as the log says")
    cudnn_benchmark: bool = opt(True, "CUDA: let cuDNN pick the fastest convolution algorithms (fixed shapes)")
    deterministic: bool = opt(False, "use deterministic algorithms only (reproducible on GPU, slower)")
    tf32: Literal["conv", "all", "none"] = opt("conv", "CUDA, Ampere and newer: where fp32 work may use TensorFloat-32 "
                                                       "(10-bit mantissa): conv (PyTorch's default, as in BasicSR: "
                                                       "the convolutions), all (also matrix products), none (strict "
                                                       "fp32)")


@dataclass
class TrainOptions:
    name: str = opt(doc="run name: the folder experiments/<name>/")
    model: Literal["esrgan", "sr"] = opt("esrgan", "esrgan: PSNR phase then GAN phase; sr: PSNR phase only")
    scale: int = opt(4, "upscaling factor (2 or 4)", lo=2, hi=4)
    device: str = opt("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N", pattern=DEVICE)
    datasets: TrainDatasetsOpt = opt(factory=TrainDatasetsOpt, doc="training and validation data")
    network_G: NetworkGOpt = opt(factory=NetworkGOpt, doc="the generator")
    network_D: NetworkDOpt = opt(factory=NetworkDOpt, doc="the discriminator (model esrgan)")
    network_F: NetworkFOpt = opt(factory=NetworkFOpt, doc="the VGG19 feature extractor (model esrgan)")
    path: TrainPathOpt = opt(factory=TrainPathOpt, doc="input and output paths")
    train: TrainOpt = opt(factory=TrainOpt, doc="losses, optimizers, schedules")
    logger: LoggerOpt = opt(factory=LoggerOpt, doc="logging and checkpoints")
    speed: SpeedOpt = opt(factory=SpeedOpt, doc="speed settings (the plain fp32 path is the default)")
    metric_options: MetricOptions = opt(factory=MetricOptions, doc="settings of the validation metrics")

    @property
    def total_iters(self) -> int:
        return self.train.psnr.niter + (self.train.gan.niter if self.model == "esrgan" else 0)


@dataclass
class TestNetworkGOpt:
    which_model_G: Literal["RRDBNet"] = opt("RRDBNet", "generator architecture")
    in_nc: int | None = opt(None, "input channels; ~: read from the weights", lo=1, hi=64)
    out_nc: int | None = opt(None, "output channels; ~: read from the weights", lo=1, hi=64)
    nf: int | None = opt(None, "feature channels of the trunk; ~: read from the weights", lo=1, hi=1024)
    nb: int | None = opt(None, "number of RRDB blocks; ~: read from the weights", lo=1, hi=1000)
    gc: int | None = opt(None, "growth channels inside each dense block; ~: read from the weights", lo=1,
                           hi=1024)


@dataclass
class TestPathOpt:
    pretrain_model_G: str = opt(doc="generator weights to test (any published ESRGAN layout, .pth or "
                                    ".safetensors); with interp_gan_model: the PSNR-oriented model", path=True)
    strict_load: bool = opt(True, "the weights must match the network key for key")
    results_root: str = opt("results", "SR images and metrics go to <results_root>/<name>/<set>/", path=True)
    interp_gan_model: str | None = opt(None, "network-interpolation sweep: the GAN generator; each alpha of "
                                             "test.interp_alphas tests (1 - alpha) * pretrain_model_G + alpha * "
                                             "this model, results in <set>/alpha_<alpha>/", path=True)


@dataclass
class TestRunOpt:
    tile: int = opt(0, "super-resolve in tiles of at most tile x tile LR pixels (bounds the GPU memory); 0: the "
                       "whole image at once", lo=0)
    tile_overlap: int = opt(16, "LR pixels of context around each tile, cropped from the output; tiles join "
                                "without seams when it covers the network's reach", lo=0)
    precision: Literal["fp32", "fp16", "bf16"] = opt("fp32", "fp32; bf16 (autocast, CUDA or CPU); fp16 "
                                                             "(autocast, CUDA only; an overflow stops the run)")
    channels_last: bool = opt(False, "run the generator in the channels_last memory format")
    self_ensemble: bool = opt(False, "x8 geometric self-ensemble: average the outputs of the 8 flipped and "
                                     "transposed inputs (the '+' results of SR papers; 8 times slower)")
    batch_size: int = opt(1, "consecutive images of the same size super-resolved together", lo=1)
    interp_alphas: list[float] = opt(factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                     doc="with path.interp_gan_model: the alphas (weight of the GAN model) to "
                                         "test", lo=0, hi=1)


@dataclass
class TestOptions:
    name: str = opt(doc="test run name: the folder results/<name>/")
    scale: int | None = opt(None, "upscaling factor of the model (2 or 4); ~: read from the weights", lo=2, hi=4)
    device: str = opt("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N", pattern=DEVICE)
    datasets: dict[str, TestSetOpt] = opt(factory=dict, doc="test sets by key: GT+LQ folders, GT only "
                                                            "(bicubic LQ made on the fly) or LQ only (no-reference "
                                                            "metrics only); a set given as null (~) is left out, "
                                                            "e.g. --set datasets.set14=null")
    network_G: TestNetworkGOpt = opt(factory=TestNetworkGOpt, doc="the generator; sizes left out (~) are read "
                                                                  "from the weights")
    path: TestPathOpt = opt(factory=lambda: TestPathOpt(pretrain_model_G=""), doc="input and output paths")
    test: TestRunOpt = opt(factory=TestRunOpt, doc="how the images are super-resolved")
    metric_options: MetricOptions = opt(factory=MetricOptions, doc="settings of the metrics")


# ------------------------------------------------------------------------------------------ the parser
def _closest(key: str, valid: list[str], cutoff: float) -> str | None:
    """The valid name nearest to `key`, case ignored (BasicSR spells network_g, dataroot_gt, gt_size)."""
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[close[0]] if close else None


def _suggest(value: str, valid: list[str]) -> str:
    """The hint of a value that is not one of `valid` (which the message lists): its counterpart here, or the
    nearest, or none."""
    if VALUE_NAMES.get(value) in valid:
        return f"; {value!r} is written {VALUE_NAMES[value]!r} here"
    close = _closest(value, valid, 0.6)
    return f"; did you mean {close}?" if close else ""


# BasicSR's names for what these option files call otherwise (its ESRGAN option files, key by key), for the
# unknown-key message of a BasicSR option file.
BASICSR_NAMES = {
    "model_type": "use model (esrgan or sr)",
    "num_gpu": "not needed: train on several GPUs with torchrun --nproc_per_node=N train.py -opt ...",
    "dist_params": "not needed: torchrun sets up the processes",
    "dist": "not needed: torchrun sets up the processes",
    "is_train": "not needed: train.py and test.py read different option files",
    "io_backend": "use datasets.<set>.data_type (auto, folder or lmdb)",
    "num_feat": "use network_G.nf / network_D.nf",
    "num_block": "use network_G.nb",
    "num_grow_ch": "use network_G.gc",
    "num_in_ch": "use network_G.in_nc / network_D.in_nc",
    "num_out_ch": "use network_G.out_nc",
    "gt_size": "use datasets.train.GT_size",
    "use_hflip": "use datasets.train.use_flip",
    "num_worker_per_gpu": "use datasets.train.n_workers",
    "batch_size_per_gpu": "use datasets.train.batch_size",
    "filename_tmpl": "not needed: LQ files are paired with GT files by name (DIV2K's <name>x4 too)",
    "meta_info_file": "not needed: LMDBs carry their meta_info.txt",
    "pretrain_network_g": "use path.pretrain_model_G",
    "pretrain_network_d": "use path.pretrain_model_D",
    "strict_load_g": "use path.strict_load",
    "param_key_g": "not needed: the weights' layout is detected (params_ema preferred)",
    "optim_g": "use train.psnr.optim_G and train.gan.optim_G (lr, beta1, beta2, weight_decay)",
    "optim_d": "use train.gan.optim_D",
    "total_iter": "use train.psnr.niter + train.gan.niter (both phases run in one run)",
    "warmup_iter": "use train.<phase>.scheduler.warmup_iters",
    "pixel_opt": "use train.psnr.pixel_criterion / train.gan.pixel_criterion and train.gan.pixel_weight",
    "perceptual_opt": "use train.gan.feature_criterion / feature_weight, and network_F for the VGG layer",
    "gan_opt": "use train.gan.gan_type / gan_weight",
    "net_d_iters": "use train.gan.D_update_ratio",
    "net_d_init_iters": "use train.gan.D_init_iters",
    "val": "use train.val_freq and train.val_metrics (the validation set is datasets.val)",
    "betas": "use beta1 and beta2",
    "type": "not needed here: the section says what it builds (network_G.which_model_G and network_D.which_model_D "
            "name the architectures; datasets are paired GT/LQ sets)",
    "tile_size": "use train.val_tile (LR pixels)",
    "tile_pad": "use train.val_tile_overlap (LR pixels)",
    "save_checkpoint_freq": "use logger.save_freq",
    "save_img": "not needed: validation images go to TensorBoard (logger.tb_images)",
    "metrics": "use train.val_metrics (datasets.<set>.metrics in test option files)",
    "wandb": "not needed: the logs go to TensorBoard (logger.use_tb_logger)",
}

# Where a test option file has other counterparts (BasicSR's test option files use the same names).
BASICSR_TEST_NAMES = {
    "model_type": "not needed: test.py tests the generator of path.pretrain_model_G",
    "num_gpu": "not needed: test.py runs on one device (device: cuda:N)",
    "val": "not needed: each test set is scored by its datasets.<set>.metrics",
    "metrics": "use datasets.<set>.metrics",
    "save_img": "not needed: test.py writes every super-resolved image",
    "tile_size": "use test.tile (LR pixels)",
    "tile_pad": "use test.tile_overlap (LR pixels)",
}

# traiNNer-redux's names with a counterpart here (its other names are BasicSR's), in training option files; in
# test option files only those of TRAINNER_TEST_NAMES have one.
TRAINNER_NAMES = {
    "lq_size": "use datasets.train.GT_size, the HR patch: lq_size x scale (128, the discriminator's input)",
    "use_amp": "use speed.precision: fp16 (bf16 with amp_bf16)",
    "amp_bf16": "use speed.precision: bf16",
    "use_channels_last": "use speed.channels_last",
    "fast_matmul": "use speed.tf32: all",
    "save_checkpoint_format": "use logger.save_safetensors: true for a safetensors copy of the generator "
                              "(models/latest_G.safetensors; the .pth files are always written)",
    "losses": "use train.<phase>.pixel_criterion and train.gan's pixel_weight, feature_criterion, feature_weight, "
              "gan_type and gan_weight",
}
TRAINNER_TEST_NAMES = {
    "use_amp": "use test.precision: fp16 (bf16 with amp_bf16)",
    "amp_bf16": "use test.precision: bf16",
    "use_channels_last": "use test.channels_last",
}

# The names of the original ESRGAN code's option files (mmsr's), likewise, by the top-level section they stand in
# ("" for the top level): elsewhere the same name is more likely a misspelling of a key there.
MMSR_NAMES = {
    "lr_G": ("train", "use train.psnr.optim_G.lr and train.gan.optim_G.lr"),
    "lr_D": ("train", "use train.gan.optim_D.lr"),
    "weight_decay_G": ("train", "use train.<phase>.optim_G.weight_decay"),
    "weight_decay_D": ("train", "use train.gan.optim_D.weight_decay"),
    "beta1_G": ("train", "use train.<phase>.optim_G.beta1"),
    "beta2_G": ("train", "use train.<phase>.optim_G.beta2"),
    "beta1_D": ("train", "use train.gan.optim_D.beta1"),
    "beta2_D": ("train", "use train.gan.optim_D.beta2"),
    "lr_scheme": ("train", "use train.<phase>.scheduler.type"),
    "lr_steps": ("train", "use train.<phase>.scheduler.milestones (counted from the start of each phase)"),
    "lr_gamma": ("train", "use train.<phase>.scheduler.gamma"),
    "T_period": ("train", "use train.<phase>.scheduler.periods"),
    "restarts": ("train", "use train.<phase>.scheduler.periods (one cycle each) and restart_weights"),
    "dataroot_HR": ("datasets", "use dataroot_GT"),
    "dataroot_LR": ("datasets", "use dataroot_LQ"),
    "HR_size": ("datasets", "use datasets.train.GT_size"),
    "mode": ("datasets", "not needed: datasets are paired GT/LQ sets (mmsr's LQGT), the LQ made from GT when "
                         "dataroot_LQ is left out"),
    "color": ("datasets", "not needed: images are read as RGB"),
    "subset_file": ("datasets", "not supported: put the images to use in a folder of their own"),
    "gpu_ids": ("", "use device (cuda:N) for one GPU, torchrun --nproc_per_node=N train.py -opt ... for several"),
    "distortion": ("", "not needed: the degradation is bicubic (datasets.<set>.degradation)"),
    "norm_type": ("network_D", "not needed: the discriminator is the paper's (batch norm)"),
    "act_type": ("network_D", "not needed: the discriminator is the paper's (LeakyReLU 0.2)"),
    "mode_D": ("network_D", "not needed: the discriminator is the paper's"),
    "root": ("path", "not needed: relative paths start at the repository root"),
    "models": ("path", "not needed: runs are written to <experiments_root>/<name>/ (path.experiments_root)"),
    "training_state": ("path", "not needed: runs are written to <experiments_root>/<name>/ "
                               "(path.experiments_root)"),
    "log": ("path", "not needed: runs are written to <experiments_root>/<name>/ (path.experiments_root)"),
    "val_images": ("path", "not needed: runs are written to <experiments_root>/<name>/ (path.experiments_root)"),
    "pretrain_model_F": ("path", "use network_F.weights"),
}

# Values of BasicSR's and the original code's option files and their counterparts here.
VALUE_NAMES = {"img": "folder", "disk": "folder", "vanilla": "gan", "cb": "charbonnier"}


def _section(tp: Any) -> type | None:
    """The option class of a section's annotation (`SomeOpt` or `SomeOpt | None`); None for values and for
    mappings of named entries (test sets)."""
    if typing.get_origin(tp) is dict:
        return None
    inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
    return inner[0] if inner else None


def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key path of an option class (dataset mappings are skipped)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        keys.append(key)
        if (section := _section(hints[f.name])) is not None:
            keys += _schema_keys(section, key)
    return keys


def _unknown_key_message(root_cls: type, prefix: str, key: str, valid: list[str]) -> str:
    """Suggest the key of the same section that differs only in case, else the counterpart of BasicSR's or
    traiNNer-redux's name (in a test option file its own where it has one), else the keys of exactly this name in
    other sections, else the nearest key of the same section, else the nearest key of the same name anywhere."""
    full = _join(prefix, key)
    same = [v for v in valid if v.lower() == key.lower()]
    testing = root_cls is TestOptions
    for other, names in (("BasicSR", BASICSR_TEST_NAMES if testing else {}), ("BasicSR", BASICSR_NAMES),
                         ("traiNNer-redux", TRAINNER_TEST_NAMES if testing else TRAINNER_NAMES)):
        if key in names and not same:
            return f"unknown option {full} (a {other} name): {names[key]}"
    if key in MMSR_NAMES and not same and MMSR_NAMES[key][0] == prefix.split(".")[0]:
        return f"unknown option {full} (a name of the original ESRGAN code): {MMSR_NAMES[key][1]}"
    by_leaf: dict[str, list[str]] = {}
    for path in _schema_keys(root_cls):
        by_leaf.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    if key in by_leaf and not same:  # the right name in the wrong section (logger.val_freq for train.val_freq)
        return f"unknown option {full}: did you mean {' or '.join(by_leaf[key])}?"
    close = _closest(key, valid, 0.6)
    if close:
        return f"unknown option {full}: did you mean {_join(prefix, close)}?"
    close = _closest(key, list(by_leaf), 0.75)
    if close:
        return f"unknown option {full}: did you mean {' or '.join(by_leaf[close])}?"
    return f"unknown option {full}: valid keys here are {', '.join(valid)}"


def _unknown_keys(cls: type, raw: Any, prefix: str, root_cls: type, overridden: Collection[str] = ()
                  ) -> list[str]:
    """A message for every unknown key of a raw tree (not only the first), so that one run lists them all; the
    keys of a section spelled in another case (BasicSR's network_g) are checked too. Keys in `overridden` came
    from --set, and their messages say so."""
    if not isinstance(raw, dict):
        return []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    messages = []
    for key, value in raw.items():
        shown = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
        name, path = key, _join(prefix, shown)
        if key not in fields:
            message = _unknown_key_message(root_cls, prefix, shown, list(fields))
            messages.append(message + (" (given with --set)" if _from_set(path, overridden) else ""))
            same_but_case = [f for f in fields if f.lower() == str(key).lower()]
            if not same_but_case:
                continue
            name = same_but_case[0]
        tp = hints[name]
        if typing.get_origin(tp) is dict:  # datasets of test option files: named entries
            entry = typing.get_args(tp)[1]
            if dataclasses.is_dataclass(entry) and isinstance(value, dict):
                for entry_name, item in value.items():
                    messages += _unknown_keys(entry, item, _join(path, str(entry_name)), root_cls, overridden)
        elif (section := _section(tp)) is not None:
            messages += _unknown_keys(section, value, path, root_cls, overridden)
    return messages


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise OptionError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if value is None:
        raise OptionError(f"{key}: ~ (null) is not a value of this option: give one (or leave the key out, "
                          "where the option has a default)")
    if origin is Literal:
        if value not in args:
            hint = (_suggest(str(value), [str(a) for a in args]) if isinstance(value, str)
                    else _BOOLEAN_HINT if isinstance(value, bool) else "")
            raise OptionError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}{hint}")
        return args[args.index(value)]
    if origin is list:
        if not isinstance(value, list):
            raise OptionError(f"{key}: expected a list, got {value!r}")
        items, problems = [], []
        for i, v in enumerate(value):  # every wrong item, not only the first
            try:
                items.append(_convert(v, args[0], f"{key}[{i}]"))
            except OptionError as err:
                problems += _messages(err)
        if problems:
            raise OptionListError(problems)
        return items
    if origin is dict:
        if not isinstance(value, dict):
            raise OptionError(f"{key}: expected a mapping of names to entries, got {value!r}")
        # A named entry set to null is left out: `--set datasets.<set>=null` drops a test set of the file.
        entries, problems = {}, []
        for name, entry in value.items():
            try:
                if entry is not None:
                    entries[str(name)] = _convert(entry, args[1], _join(key, str(name)))
            except OptionError as err:
                problems += _messages(err)
        if problems:
            raise OptionListError(problems)
        return entries
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)  # exactly, also beyond 2**53
        # YAML reads `5e3` as a string and `5e3`-style numbers are common in option files: accept integral ones.
        number = _as_number(value)
        if number is None or not math.isfinite(number) or float(number) != int(number):
            raise OptionError(f"{key}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            raise OptionError(f"{key}: expected a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if isinstance(value, bool):
            raise OptionError(f"{key}: expected a string, got {value!r}{_BOOLEAN_HINT}")
        if not isinstance(value, str | int | float):
            raise OptionError(f"{key}: expected a string, got {value!r}")
        return _as_written(value)
    raise TypeError(f"unsupported option type {tp} at {key}")


_BOOLEAN_HINT = " (YAML reads yes, no, on, off, true and false as booleans): quote the value, e.g. 'on'"


def _as_written(value: Any) -> str:
    """A scalar as a string, numbers as the option file wrote them: `name: 0123` is '0123', not YAML 1.1's
    octal 83, and `name: 1.10` is '1.10'."""
    return getattr(value, "yaml_text", None) or str(value)


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionError(f"{prefix or 'the option file'}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values, problems = {}, []
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"missing option {key}: {f.metadata.get('doc', '')}")
            continue
        try:
            value = _convert(raw[name], hints[name], key)
        except OptionError as err:
            problems += _messages(err)
            continue
        lo, hi, pattern = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("pattern")
        listed = isinstance(value, list)
        for i, (item, written) in enumerate(zip(value if listed else [value], raw[name] if listed else [raw[name]],
                                                strict=True)):
            where = f"{key}[{i}]" if listed else key
            numeric = isinstance(item, int | float) and not isinstance(item, bool)
            if numeric and ((lo is not None and item < lo) or (hi is not None and item > hi)):
                bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]" if lo is not None else f"<= {hi}"
                # As written: 1e300 for an integer option, not its 301 digits
                shown = _as_written(written) if isinstance(written, str | int | float) else repr(item)
                problems.append(f"{where}: {shown} is out of range; it must be {bounds}")
            if pattern and isinstance(item, str) and not re.fullmatch(pattern[0], item, re.ASCII):
                problems.append(f"{where}: {item!r} {pattern[1]}")
        values[name] = value
    if problems:
        raise OptionListError(problems)
    return cls(**values)


_NAME_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool")}


def _keys_as_names(node: yaml.MappingNode) -> None:
    """Option keys are names: `007:` is '007' and `on:` is 'on', not YAML 1.1's 7 and True."""
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _NAME_TAGS:
            key_node.tag = "tag:yaml.org,2002:str"


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, which PyYAML would silently resolve to the
    last one (a second `train:` section replacing the whole first one)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # SafeLoader calls this for every mapping, and for a merge source before it rewrites that source in place:
        # each node is checked once, as written.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            _keys_as_names(node)
            self._check_unique(node)
        super().flatten_mapping(node)  # merge sources come through here first: their keys are names too

    def _check_unique(self, node: yaml.MappingNode) -> None:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys after it may override those
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: construct_mapping says what is wrong with it
                continue
            if first is not None:
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                raise OptionError(f"the key {key!r} is given twice in one section ({where}); YAML would keep "
                                  "only the last one: merge the two")
            lines[key] = line


class _WrittenInt(int):
    yaml_text: str


class _WrittenFloat(float):
    yaml_text: str


def _keep_text(construct: Any, kind: type) -> Any:
    def constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = kind(construct(loader, node))
        value.yaml_text = node.value
        return value
    return constructor


# Numbers remember how they were written, for the options that are strings; _convert gives every other option a
# plain int or float.
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int",
                                 _keep_text(yaml.SafeLoader.construct_yaml_int, _WrittenInt))
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float",
                                 _keep_text(yaml.SafeLoader.construct_yaml_float, _WrittenFloat))


def load_yaml(stream: Any) -> Any:
    """yaml.safe_load, refusing keys given twice in one mapping; mapping keys are strings as written, and numbers
    remember how they were written (an int or float subclass, which _convert makes plain: the raw tree is for
    parse_options, not for yaml.safe_dump)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` strings (value parsed as YAML) to the raw option tree; returns it. Sections that
    the file shares through YAML aliases (`b: *a`) are copied apart first: an override changes only the key
    named."""
    for key, value in raw.items():
        raw[key] = _unshared(value, key)
    for item in overrides:
        dotted, _, text = item.partition("=")
        parts = dotted.strip().split(".")
        if "=" not in item or not all(parts):
            raise OptionError(f"--set {item!r}: expected dotted.key=value, e.g. train.gan.niter=1000")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise OptionError(f"--set {dotted}: {part!r} holds a value, not a section")
            node = child
        if comment := _trailing_comment(text):
            value = text.strip()
            scalar = value[:1] not in ("[", "{", "'", '"') and '"' not in value
            fix = f"quote the value, e.g. --set '{dotted}=\"{value}\"'" if scalar else "remove it"
            raise OptionError(f"--set {dotted}: YAML would drop {comment!r} as a comment; {fix}")
        try:
            node[parts[-1]] = load_yaml(text)
        except OptionError as err:
            raise OptionError(f"--set {dotted}: {err}") from None
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise OptionError(f"--set {dotted}: {text!r} is not valid YAML ({problem}); write lists as [1, 2] "
                              "and quote strings that hold YAML characters") from None
    return raw


def _unshared(node: Any, key: str, inside: frozenset[int] = frozenset()) -> Any:
    """A copy of the raw tree `node` (at option `key`) whose mappings and lists appear once each (copy.deepcopy
    would keep the sharing); a node that holds itself (`a: &x [*x]`) is refused."""
    if isinstance(node, dict | list):
        if id(node) in inside:
            raise OptionError(f"{key}: the YAML alias here refers to a node that holds it; an option cannot hold "
                              "itself")
        inside = inside | {id(node)}
    if isinstance(node, dict):
        return {name: _unshared(value, _join(key, str(name)), inside) for name, value in node.items()}
    if isinstance(node, list):
        return [_unshared(value, f"{key}[{i}]", inside) for i, value in enumerate(node)]
    return node


def _trailing_comment(text: str) -> str:
    """What YAML would drop as a comment at the end of a --set value (`name=run #2` would give 'run')."""
    try:
        ends = [token.end_mark.index for token in yaml.scan(text, Loader=yaml.SafeLoader)
                if not isinstance(token, yaml.StreamEndToken | yaml.BlockEndToken)]
    except yaml.YAMLError:
        return ""  # load_yaml says what is wrong
    rest = text[max(ends, default=0):].strip()
    return rest if rest.startswith("#") else ""


def _resolve_paths(obj: Any, root: Path, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), _join(prefix, f.name)
        if f.metadata.get("path") and isinstance(value, str) and not value.strip():
            if f.default is not None:  # "" would be the current folder, wherever that is
                default = f" (or leave the key out for {f.default!r})" if isinstance(f.default, str) else ""
                raise OptionError(f"{key}: {value!r} is not a path; give one{default}")
            setattr(obj, f.name, None)  # an optional path left empty is left out, as ~
        elif f.metadata.get("path") and isinstance(value, str):
            setattr(obj, f.name, str((root / Path(value).expanduser()).resolve()))
        elif dataclasses.is_dataclass(value):
            _resolve_paths(value, root, key)
        elif isinstance(value, dict):
            for name, entry in value.items():
                if dataclasses.is_dataclass(entry):
                    _resolve_paths(entry, root, _join(key, name))


def _require_dir(path: str | None, key: str, check: bool) -> None:
    if check and path is not None and Path(path).is_file():
        raise OptionError(f"{key}: {path} is a file; give the folder (of images, or an LMDB) that holds it")
    if check and path is not None and not Path(path).is_dir():
        raise OptionError(f"{key}: folder {path} does not exist (relative paths start at {ROOT_NAME})")


def _require_output_dir(root: str, name: str, key: str) -> None:
    """The folder results go to, <root>/<name>, must be (or become) a folder."""
    for path, what, other in ((Path(root), key, "folder"), (Path(root) / name, "name", "name")):
        if path.exists() and not path.is_dir():
            raise OptionError(f"{what}: {path} is a file; the results go to a folder there, so give another {other}")


def _require_file(path: str | None, key: str, check: bool, missing_hint: str = "") -> None:
    if check and path and Path(path).is_dir():
        hint = (": give one of its training_state/<iter>.state files, or train with --auto_resume"
                if key == "path.resume_state" else "")
        raise OptionError(f"{key}: {path} is a folder, not a file{hint}")
    if check and path and not Path(path).is_file():
        raise OptionError(f"{key}: file {path} does not exist (relative paths start at {ROOT_NAME}){missing_hint}")


def _check_dataset(ds: DatasetOpt, key: str, need_gt: bool, check: bool) -> None:
    if ds.dataroot_GT is None and (need_gt or ds.dataroot_LQ is None):
        raise OptionError(f"{key}.dataroot_GT: a GT folder is required"
                          + ("" if need_gt else " (or give dataroot_LQ alone to upscale without metrics)"))
    _require_dir(ds.dataroot_GT, f"{key}.dataroot_GT", check)
    _require_dir(ds.dataroot_LQ, f"{key}.dataroot_LQ", check)


def _check_train(o: TrainOptions, check: bool) -> None:
    from .archs.discriminator import INPUT_SIZE
    from .archs.rrdbnet import SUPPORTED_SCALES
    from .archs.vgg import CONV5_4, FEATURE_LAYERS

    if o.scale not in SUPPORTED_SCALES:
        raise OptionError(f"scale: {o.scale} is not supported; RRDBNet upscales by {SUPPORTED_SCALES}")
    _require_output_dir(o.path.experiments_root, o.name, "path.experiments_root")
    for key, channels in (("network_G.in_nc", o.network_G.in_nc), ("network_G.out_nc", o.network_G.out_nc),
                          ("network_D.in_nc", o.network_D.in_nc)):
        if channels != 3:
            raise OptionError(f"{key}: {channels}, but training reads every image as RGB (gray ones are "
                              "replicated to 3 channels): set it to 3")
    tr = o.datasets.train
    if tr.GT_size % o.scale:
        raise OptionError(f"datasets.train.GT_size: {tr.GT_size} is not a multiple of scale {o.scale}")
    _check_dataset(tr, "datasets.train", need_gt=True, check=check)
    if o.datasets.val is not None:
        _check_dataset(o.datasets.val, "datasets.val", need_gt=True, check=check)
    for net in "GD":  # read by a new run only
        _require_file(getattr(o.path, f"pretrain_model_{net}"), f"path.pretrain_model_{net}", check,
                      f"; a run resumed from a training state takes its weights from there: to resume without "
                      f"the file, add --set path.pretrain_model_{net}=~ (a new run would then start from "
                      "random weights)")
    _require_file(o.path.resume_state, "path.resume_state", check)
    if o.model == "sr":
        if o.train.gan.niter:
            raise OptionError("train.gan.niter: model 'sr' has no GAN phase; set it to 0 or use model esrgan")
        if o.train.psnr.niter == 0:
            raise OptionError("train.psnr.niter: model 'sr' trains the PSNR phase only and needs niter > 0")
    else:
        if tr.GT_size != INPUT_SIZE:
            raise OptionError(f"datasets.train.GT_size: {tr.GT_size} differs from the discriminator's input size "
                              f"{INPUT_SIZE} (network_D.which_model_D = {o.network_D.which_model_D})")
        if o.train.gan.niter == 0:
            raise OptionError("train.gan.niter: model 'esrgan' needs a GAN phase (niter > 0); use model sr for "
                              "PSNR-only training")
        layer, use_bn = o.network_F.feature_layer, o.network_F.use_bn
        if layer is not None and layer >= FEATURE_LAYERS[use_bn]:
            raise OptionError(f"network_F.feature_layer: {layer} is not a layer of VGG19"
                              f"{' with batch norm' if use_bn else ''} (0 to {FEATURE_LAYERS[use_bn] - 1}; "
                              f"conv5_4 before its ReLU is {CONV5_4[use_bn]})")
        if o.network_F.weights == "random" and not o.network_F.allow_random_weights:
            raise OptionError("network_F.weights: 'random' needs network_F.allow_random_weights: true")
        if o.network_F.weights not in ("imagenet", "random"):
            _require_file(o.network_F.weights, "network_F.weights", check)
    if o.total_iters == 0:
        raise OptionError("train: nothing to do, train.psnr.niter and train.gan.niter are both 0")
    if "psnr" not in o.train.val_metrics:
        raise OptionError(f"train.val_metrics: {o.train.val_metrics} lacks psnr, which picks the best model; add it")
    _require_file(o.metric_options.lpips_weights, "metric_options.lpips_weights", check)


def _check_test(o: TestOptions, check: bool) -> None:
    from .archs.rrdbnet import SUPPORTED_SCALES

    if o.scale is not None and o.scale not in SUPPORTED_SCALES:
        raise OptionError(f"scale: {o.scale} is not supported; RRDBNet upscales by {SUPPORTED_SCALES}")
    if not o.datasets:
        raise OptionError("datasets: name at least one test set")
    _require_output_dir(o.path.results_root, o.name, "path.results_root")
    named: dict[str, str] = {}
    for key, ds in o.datasets.items():
        ds.name = ds.name or key
        _check_name(ds.name, f"datasets.{key}.name")
        if ds.name in named:  # one results folder per name
            raise OptionError(f"datasets.{key}.name: {ds.name!r} is also the name of datasets.{named[ds.name]}; "
                              "each test set's results go to results/<name>/<set name>, so give each its own")
        named[ds.name] = key
        if ds.name == "summary.csv" or re.fullmatch(r"test_.*\.log|options_.*\.yml", ds.name):
            raise OptionError(f"datasets.{key}.name: {ds.name!r} is also the name of a file test.py writes into "
                              "results/<name>/ beside the sets' folders; give the set another name")
        _check_dataset(ds, f"datasets.{key}", need_gt=False, check=check)
        if ds.ma_scores is not None:
            if "niqe" not in ds.metrics:
                raise OptionError(f"datasets.{key}.ma_scores: the perceptual index needs NIQE too; add niqe to "
                                  f"datasets.{key}.metrics")
            _require_file(ds.ma_scores, f"datasets.{key}.ma_scores", check)
            if o.path.interp_gan_model:
                raise OptionError(f"datasets.{key}.ma_scores: Ma scores belong to one set of SR images, but "
                                  "path.interp_gan_model makes one per alpha; score each alpha's folder with "
                                  "scripts/evaluate.py --ma-scores instead")
    _require_file(o.metric_options.lpips_weights, "metric_options.lpips_weights", check)
    if not o.path.pretrain_model_G:
        raise OptionError("path.pretrain_model_G: name the generator weights to test")
    _require_file(o.path.pretrain_model_G, "path.pretrain_model_G", check)
    _require_file(o.path.interp_gan_model, "path.interp_gan_model", check)
    if o.path.interp_gan_model:
        alphas = o.test.interp_alphas
        if not alphas:
            raise OptionError("test.interp_alphas: path.interp_gan_model is set; give at least one alpha")
        if len({f"{a:g}" for a in alphas}) != len(alphas):
            raise OptionError(f"test.interp_alphas: {alphas} repeats a value (each alpha gets a folder alpha_<a>)")


def _check_scheduler(o: SchedulerOpt, key: str) -> None:
    if any(b <= a for a, b in zip(o.milestones, o.milestones[1:], strict=False)):
        raise OptionError(f"{key}.milestones: {o.milestones} do not increase; give each iteration once, in order "
                          "(PyTorch would apply gamma at a repeated one once per repetition)")
    if o.type == "CosineAnnealingRestartLR":
        if not o.periods:
            raise OptionError(f"{key}.periods: CosineAnnealingRestartLR needs at least one period")
        if o.restart_weights and len(o.restart_weights) != len(o.periods):
            raise OptionError(f"{key}.restart_weights: {len(o.restart_weights)} weights for "
                              f"{len(o.periods)} periods; give one per period or none")


MAX_NAME_BYTES = 200


def _check_name(name: str, key: str = "name") -> None:
    """A run (or test set) name is one folder name: experiments/<name> (results/<name>/<set name>) must not be
    the root itself or outside it, since an earlier folder of that path is moved aside."""
    if name.strip() in ("", ".", "..") or "/" in name or "\\" in name:
        raise OptionError(f"{key}: {name!r} is not a folder name; the results go to a folder of this name, so give "
                          "a name such as 'ESRGAN_x4_DIV2K' (no '/', not empty, '.' or '..')")
    if len(name.encode()) > MAX_NAME_BYTES:  # file systems allow 255 bytes, and the log files' names add ~40
        raise OptionError(f"{key}: {len(name.encode())} bytes long; give a name of at most {MAX_NAME_BYTES} "
                          "(it names folders and files, e.g. train_<name>_<time>.log)")


def parse_options(cls: type, raw: dict, root: Path = REPO_ROOT, check_paths: bool = True,
                  overridden: Collection[str] = ()) -> Any:
    """Validate a raw option tree into `cls` (TrainOptions or TestOptions), resolve paths, run the checks.

    `check_paths=False` skips the existence checks of input paths (for inspecting option files elsewhere);
    `overridden` names the keys given with --set (their unknown-key messages say so).
    """
    unknown = _unknown_keys(cls, raw, "", cls, overridden)
    try:
        options = _build(cls, raw, "")
    except OptionError as err:
        raise OptionListError(unknown + _messages(err)) from None
    if unknown:
        raise OptionListError(unknown, "unknown options")
    _check_name(options.name)
    _resolve_paths(options, root)
    if isinstance(options, TrainOptions):
        weights = options.network_F.weights
        if weights not in ("imagenet", "random"):
            if weights.strip().lower() in ("imagenet", "random") and not (root / weights).exists():
                raise OptionError(f"network_F.weights: {weights!r} is not a file; did you mean "
                                  f"{weights.strip().lower()!r}?")
            options.network_F.weights = str((root / Path(weights).expanduser()).resolve())
        options.datasets.train.name = options.datasets.train.name or "train"
        if options.datasets.val is not None:
            options.datasets.val.name = options.datasets.val.name or "val"
        _check_scheduler(options.train.psnr.scheduler, "train.psnr.scheduler")
        _check_scheduler(options.train.gan.scheduler, "train.gan.scheduler")
        _check_train(options, check_paths)
    else:
        _check_test(options, check_paths)
    return options


def load_options(cls: type, path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read a YAML option file, apply `--set` overrides and validate."""
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"option file {path} is a folder; give the YAML file, e.g. options/train_ESRGAN.yml")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
        hint = (f"; did you mean {REPO_ROOT / path}?" if not path.is_absolute() and (REPO_ROOT / path).is_file()
                else "")
        raise OptionError(f"option file {path} does not exist{where}{hint}")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = load_yaml(fh)
        except yaml.YAMLError as err:
            tabs = " (indent with spaces: YAML does not allow tabs)" if "'\\t'" in str(err) else ""
            raise OptionError(f"{path}: not valid YAML{tabs}: {err}") from err
        except UnicodeDecodeError as err:
            raise OptionError(f"{path}: not UTF-8 text ({err}); save the option file as UTF-8") from None
        except OptionError as err:
            raise OptionError(f"{path}: {err}") from None
    if raw is None:
        raise OptionError(f"{path}: the file holds no options (it is empty, or only comments)")
    if not isinstance(raw, dict):
        raise OptionError(f"{path}: the top level must be a mapping of option keys")
    _check_file_kind(cls, raw, path)
    _check_dropped_sets(cls, raw, overrides or [])
    apply_overrides(raw, overrides or [])  # its errors name the --set argument, not the file
    overridden = {item.partition("=")[0].strip() for item in overrides or []}
    try:
        return parse_options(cls, raw, overridden=overridden)
    except OptionError as err:
        messages = [_mark_overridden(message, overridden) for message in _messages(err)]
        marked = OptionListError(messages, err.what) if isinstance(err, OptionListError) else messages[0]
        raise OptionError(f"{path}: {marked}") from None


def _mark_overridden(message: str, overridden: Collection[str]) -> str:
    """`message` with " (given with --set)" when the key it starts with came from --set: the file says otherwise."""
    key = re.sub(r"\[\d+\]$", "", message.partition(": ")[0])
    return message + " (given with --set)" if _from_set(key, overridden) else message


def _from_set(key: str, overridden: Collection[str]) -> bool:
    """Whether `key` was given with --set: itself, a section it is in, or a section made by a key inside it."""
    return any(o == key or o.startswith(f"{key}.") or key.startswith(f"{o}.") for o in overridden)


def _check_file_kind(cls: type, raw: dict, path: Path) -> None:
    """Refuse a training option file given to test.py, and a test option file given to train.py, by the sections
    only the other kind has."""
    if cls is TestOptions and {"train", "network_D", "logger"} & raw.keys():
        raise OptionError(f"{path} is a training option file (it has a train, network_D or logger section); "
                          "test.py takes a test option file, such as options/test.yml")
    if cls is not TrainOptions or {"train", "network_D", "logger"} & raw.keys():
        return
    datasets, paths = raw.get("datasets"), raw.get("path")
    signs = ["a test section"] if "test" in raw else []
    if isinstance(paths, dict) and "results_root" in paths:
        signs.append("path.results_root")
    if isinstance(datasets, dict) and datasets and "train" not in datasets and "train" not in raw:
        signs.append(f"test sets ({', '.join(map(str, datasets))}) and no train section")
    if signs:
        raise OptionError(f"{path} is a test option file (it has {signs[0]}); train.py takes a "
                          "training option file, such as options/train_ESRGAN.yml")


def _check_dropped_sets(cls: type, raw: dict, overrides: list[str]) -> None:
    """`--set datasets.<key>=null` must name a test set of the file (or of an earlier --set): otherwise it would
    leave nothing out."""
    if cls is not TestOptions:
        return
    sets = raw.get("datasets") if isinstance(raw.get("datasets"), dict) else {}
    present = set(sets)
    for item in overrides:
        dotted, _, text = item.partition("=")
        parts = dotted.strip().split(".")
        if len(parts) < 2 or parts[0] != "datasets":
            continue
        try:
            dropped = len(parts) == 2 and load_yaml(text) is None
        except (yaml.YAMLError, OptionError):
            continue  # apply_overrides says what is wrong with the value
        if not dropped:
            present.add(parts[1])
        elif parts[1] in present:
            present.discard(parts[1])
        else:
            by_name = [k for k, v in sets.items() if isinstance(v, dict) and v.get("name") == parts[1]]
            near = by_name or [k for k in present if k.lower() == parts[1].lower()]
            hint = f"; did you mean datasets.{near[0]}?" if near else ""
            raise OptionError(f"--set {item}: there is no test set datasets.{parts[1]} to leave out (the file's are "
                              f"{', '.join(sets) or 'none'}){hint}")


def to_dict(options: Any) -> dict:
    """The resolved options as plain data, for writing next to a run."""
    return dataclasses.asdict(options)


def dump_yaml(options: Any, path: Path) -> None:
    from .utils.files import atomic_write_text  # (utils.files imports torch, which parsing options does not need)

    atomic_write_text(path, yaml.safe_dump(to_dict(options), sort_keys=False))
