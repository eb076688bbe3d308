"""The published key layouts of ESRGAN generator weights, and safe reading, conversion and writing of them.

The same RRDBNet circulates under three sets of state-dict keys:

- ``esrgan``: the original ESRGAN repository's current ("new arch") keys, which are this project's own
  (``conv_first``, ``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``,
  ``conv_last``); the released ``RRDB_ESRGAN_x4.pth`` / ``RRDB_PSNR_x4.pth`` use them.
- ``old``: the original repository's first ("old arch") release, a flattened ``nn.Sequential`` named ``model``:
  ``model.0`` conv_first, ``model.1.sub.{i}.RDB{k}.conv{j}.0`` the dense-block convs, ``model.1.sub.{nb}`` the trunk
  conv, then per x2 stage (Upsample, conv, LeakyReLU) and finally HRconv, LeakyReLU, conv_last. So the upsampling
  convs sit at ``model.3`` and ``model.6``, HRconv at ``model.8`` and conv_last at ``model.10`` for x4, and at
  ``model.3``, ``model.5``, ``model.7`` for x2.
- ``basicsr``: BasicSR / Real-ESRGAN (``body.{i}.rdb{k}.conv{j}``, ``conv_body``, ``conv_up1``, ``conv_up2``,
  ``conv_hr``), usually wrapped as ``{'params': ...}`` and/or ``{'params_ema': ...}``. BasicSR's x4 RRDBNet is ours;
  its x2 and x1 models pixel-unshuffle the input before ``conv_first``, which our RRDBNet cannot do, so they are
  refused.

Any of them may come wrapped (``params_ema``, ``params``, ``state_dict``, ``model``), with DataParallel's ``module.``
prefix, or as one part of a whole-model state dict (mmediting / mmagic's ``generator_ema.`` / ``generator.`` /
``discriminator.`` keys, whose generator is BasicSR's layout).

Files are read without arbitrary unpickling (``torch.load(weights_only=True)``) or from ``.safetensors`` (optional
``safetensors`` package).
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from ..utils.files import atomic_save, atomic_write_bytes, blocked_global, error_summary
from ..utils.misc import listing
from .rrdbnet import RRDBNet

Layout = Literal["esrgan", "old", "basicsr"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
LAYOUT_NAMES: dict[Layout, str] = {"esrgan": "ESRGAN layout", "old": "old-arch layout", "basicsr": "BasicSR layout"}
# Containers that training frameworks put around a state dict, in order of preference: BasicSR saves the EMA
# generator (the one to use for inference) as params_ema next to the raw params.
WRAPPERS = ("params_ema", "params", "state_dict", "model")
# Key prefixes of a network inside a whole-model state dict (mmediting / mmagic: generator_ema., generator.,
# discriminator.; Lightning-style modules: net_g., netG., ...), in order of preference: the EMA generator first.
GENERATOR_PARTS = ("generator_ema.", "generator.", "net_g_ema.", "net_g.", "netG.")
DISCRIMINATOR_PARTS = ("discriminator.", "net_d.", "netD.")
KEYS_SHOWN = 5

_FIRST_CONV: dict[Layout, str] = {"esrgan": "conv_first", "old": "model.0", "basicsr": "conv_first"}
_BLOCK_INDEX: dict[Layout, re.Pattern[str]] = {"esrgan": re.compile(r"RRDB_trunk\.(\d+)\.RDB"),
                                               "old": re.compile(r"model\.1\.sub\.(\d+)\.RDB"),
                                               "basicsr": re.compile(r"body\.(\d+)\.rdb")}
_BLOCK_CONV: dict[Layout, str] = {"esrgan": "RRDB_trunk.{i}.RDB{k}.conv{j}", "old": "model.1.sub.{i}.RDB{k}.conv{j}.0",
                                  "basicsr": "body.{i}.rdb{k}.conv{j}"}
_UPSAMPLE_STAGES = {2: 1, 4: 2}
_CONV_PARAMS = ("weight", "bias")  # every tensor of RRDBNet, in state-dict order within a conv


def _single_convs(layout: Layout, nb: int, scale: int) -> dict[str, str]:
    """Our names of the convs outside the trunk -> theirs."""
    if layout == "esrgan":
        names = ("conv_first", "trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last")
        return {n: n for n in names}
    if layout == "basicsr":
        return {"conv_first": "conv_first", "trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2",
                "HRconv": "conv_hr", "conv_last": "conv_last"}
    # Old arch: model.2 .. model.{3 * stages + 1} are the (Upsample, conv, LeakyReLU) triples.
    stages = _UPSAMPLE_STAGES[scale]
    return {"conv_first": "model.0", "trunk_conv": f"model.1.sub.{nb}", "upconv1": "model.3", "upconv2": "model.6",
            "HRconv": f"model.{3 * stages + 2}", "conv_last": f"model.{3 * stages + 4}"}


def _module_table(layout: Layout, nb: int, scale: int) -> dict[str, str]:
    """Every conv of RRDBNet(nb, scale), ours -> theirs, in our state-dict order."""
    single = _single_convs(layout, nb, scale)
    table = {"conv_first": single["conv_first"]}
    for i in range(nb):
        for k in (1, 2, 3):
            for j in (1, 2, 3, 4, 5):
                table[_BLOCK_CONV["esrgan"].format(i=i, k=k, j=j)] = _BLOCK_CONV[layout].format(i=i, k=k, j=j)
    ends = ("trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last") if scale == 4 else (
        "trunk_conv", "upconv1", "HRconv", "conv_last")
    return table | {name: single[name] for name in ends}


def detect_layout(sd: Mapping[str, Any]) -> Layout:
    """Which published layout the keys of `sd` (unwrapped, no ``module.`` prefix) follow."""
    found = [layout for layout in LAYOUTS
             if f"{_FIRST_CONV[layout]}.weight" in sd and any(_BLOCK_INDEX[layout].match(k) for k in sd)]
    if len(found) != 1 and "conv0_0.weight" in sd and "linear1.weight" in sd:
        raise ValueError("these are discriminator weights (Discriminator_VGG_128: conv0_0, ..., linear1), not a "
                         "generator's: give a *_G.pth file here (a *_D.pth file belongs in path.pretrain_model_D)")
    if len(found) != 1 and sd and all(re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in sd):
        raise ValueError("these are SRVGGNetCompact weights (Real-ESRGAN's realesr-animevideov3 / "
                         "realesr-general models: body.0, body.1, ...), another network than ESRGAN's RRDBNet; "
                         "they cannot be used here")
    if len(found) != 1:
        raise ValueError("the keys match no single known ESRGAN generator layout (ESRGAN: conv_first, RRDB_trunk.*; "
                         "old arch: model.0, model.1.sub.*; BasicSR: conv_first, body.*); the file has "
                         f"{len(sd)} keys: {listing(list(sd), KEYS_SHOWN)}")
    return found[0]


def _blocks_and_scale(sd: Mapping[str, torch.Tensor], layout: Layout) -> tuple[int, int]:
    """The number of RRDBs (1 + the highest block index) and the scale that the keys of `sd` imply."""
    nb = 1 + max((int(m.group(1)) for k in sd if (m := _BLOCK_INDEX[layout].match(k))), default=-1)
    if layout != "old":
        return nb, 4 if f"{_single_convs(layout, nb, 4)['upconv2']}.weight" in sd else 2
    # The old arch has no names for the upsampling stages; the index of conv_last (3 * stages + 4) tells them.
    last = max(int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.", k)))
    scales = {3 * stages + 4: scale for scale, stages in _UPSAMPLE_STAGES.items()}
    if last not in scales:
        x8 = " (that of an x8 RRDBNet, with three upsampling stages)" if last == 13 else ""
        raise ValueError(f"old-arch weights whose last layer is model.{last}{x8}: RRDBNet has conv_last at model.7 "
                         "(x2) or model.10 (x4); other upsampling layouts are not supported")
    return nb, scales[last]


def _rename(sd: Mapping[str, torch.Tensor], table: dict[str, str], source: str) -> dict[str, torch.Tensor]:
    """Rename the modules of `sd` by `table` (source -> target); the result follows the table's order."""
    position = {name: n for n, name in enumerate(table)}
    renamed, unknown = [], []
    for key, tensor in sd.items():
        module, _, param = key.rpartition(".")
        if module in table and param in _CONV_PARAMS:
            renamed.append(((position[module], _CONV_PARAMS.index(param)), f"{table[module]}.{param}", tensor))
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the {source} have no counterpart in RRDBNet: "
                         f"{listing(unknown, KEYS_SHOWN)}{_variant(unknown)}")
    return {key: tensor for _, key, tensor in sorted(renamed, key=lambda item: item[0])}


def _variant(unknown: list[str]) -> str:
    """What the keys RRDBNet lacks say about the network, for the message that refuses them."""
    if any(re.search(r"(upconv3|conv_up3)\.", k) for k in unknown):
        return (". A third upsampling conv makes an x8 RRDBNet: this RRDBNet upscales x2 or x4 (the "
                "paper's x4)")
    if any(".conv1x1." in k for k in unknown):
        return ". The 1x1 convs in the dense blocks are ESRGAN+'s (nESRGAN+), another network than ESRGAN's"
    return ""


def _refuse_pixel_unshuffle(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse Real-ESRGAN's x2 / x1 RRDBNet (BasicSR's, in whichever layout the file names it)."""
    in_ch, out_ch = sd["conv_first.weight"].shape[1], sd["conv_last.weight"].shape[0]
    for factor, scale in ((2, 2), (4, 1)):
        if in_ch == factor * factor * out_ch:
            raise ValueError(
                f"these are BasicSR / Real-ESRGAN x{scale} weights: conv_first takes {in_ch} = {factor * factor} x "
                f"{out_ch} channels because that RRDBNet pixel-unshuffles the input by {factor} before it (and "
                "upsamples x4 after the trunk). The original ESRGAN RRDBNet of this project has no pixel-unshuffle, "
                "so these weights cannot be used with it")


def to_esrgan(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors under our keys, in our order, whatever the published layout of `sd`."""
    layout = detect_layout(sd)
    nb, scale = _blocks_and_scale(sd, layout)
    ours_to_theirs = _module_table(layout, nb, scale)
    ours = _rename(sd, {theirs: ours for ours, theirs in ours_to_theirs.items()}, LAYOUT_NAMES[layout])
    if "conv_first.weight" in ours and "conv_last.weight" in ours:
        _refuse_pixel_unshuffle(ours)
    return ours


def from_esrgan(sd: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """The same tensors under the keys of `layout` (`sd` in our layout)."""
    given = detect_layout(sd)
    if given != "esrgan":
        raise ValueError(f"expected weights in the ESRGAN layout, got the {LAYOUT_NAMES[given]}")
    nb, scale = _blocks_and_scale(sd, "esrgan")
    if layout == "basicsr" and scale == 2:
        raise ValueError("an x2 RRDBNet has no BasicSR layout: BasicSR's x2 RRDBNet pixel-unshuffles its input and "
                         "keeps two x2 upsampling stages, so it cannot hold this network")
    return _rename(sd, _module_table(layout, nb, scale), LAYOUT_NAMES["esrgan"])


def infer_hparams(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet's in_nc, out_nc, nf, nb, gc and scale from the shapes of a state dict in our layout."""
    needed = ("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "conv_last.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"cannot tell the RRDBNet size: {', '.join(missing)} missing")
    nb, scale = _blocks_and_scale(sd, "esrgan")
    nf, in_nc = sd["conv_first.weight"].shape[:2]
    return {"in_nc": in_nc, "out_nc": sd["conv_last.weight"].shape[0], "nf": nf, "nb": nb,
            "gc": sd["RRDB_trunk.0.RDB1.conv1.weight"].shape[0], "scale": scale}


def describe_hparams(hparams: Mapping[str, int]) -> str:
    """E.g. 'nf=64, nb=23, gc=32, scale 4 (in_nc=3, out_nc=3)'."""
    return "nf={nf}, nb={nb}, gc={gc}, scale {scale} (in_nc={in_nc}, out_nc={out_nc})".format(**hparams)


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside `obj` (raw, or under one of WRAPPERS) without DataParallel's ``module.`` prefix,
    and what was used, e.g. 'params_ema' or "raw state dict, 'module.' prefix removed"."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict, found {type(obj).__name__}")
    if isinstance(obj.get("model"), Mapping) and "networks" in obj["model"] and "iter" in obj:
        raise ValueError(f"this is a training state (training_state/<iter>.state, of iteration {obj['iter']}), "
                         "not weights: give the generator saved beside it, models/<iter>_G.pth")
    used = "raw state dict"
    for wrapper in WRAPPERS:
        if isinstance(obj.get(wrapper), Mapping):
            obj, used = obj[wrapper], wrapper
            break
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"not a state dict: {len(others)} entries are not tensors ({listing(others, KEYS_SHOWN)}); "
                         f"state dicts are recognised raw or under one of {', '.join(WRAPPERS)}")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("module.") for k in obj):
        used += ", 'module.' prefix removed"
    return sd, used


def select_part(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], str]:
    """The keys under the first of `prefixes` that `sd` has (e.g. GENERATOR_PARTS in an mmediting checkpoint that
    holds generator, EMA generator and discriminator), without it, and a note such as ", 'generator_ema.' keys";
    `sd` itself when it has none of them."""
    for prefix in prefixes:
        part = {k.removeprefix(prefix).removeprefix("module."): v for k, v in sd.items() if k.startswith(prefix)}
        if part:
            return part, f", its {prefix!r} keys"
    return sd, ""


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        import safetensors
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(f"{path} is a safetensors file: reading it needs the optional safetensors package: "
                         "pip install safetensors") from None
    try:
        return load_file(path, device="cpu")
    except (OSError, safetensors.SafetensorError) as err:
        raise ValueError(f"cannot read weights file {path}: {err}") from None


# The first bytes of the image formats a weights option is most often given by mistake (an input for a model).
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF",
                    b"MM\x00*": "TIFF", b"GIF8": "GIF"}


def _read_torch(path: Path) -> Any:
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"cannot read weights file {path}: the file is empty")
    try:
        # An open file, not the path: torch.load hands a path ending in .safetensors to safetensors.
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive")  # the error below says it
            return torch.load(fh, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"cannot read weights file {path}: it does not exist") from None
    except pickle.UnpicklingError as err:
        # torch's message suggests weights_only=False; name the offending global instead.
        needed = blocked_global(err)
        if needed:
            raise ValueError(f"refusing to unpickle {path}: it is not a plain weights file (it asks for "
                             f"{needed}), and unpickling it could run arbitrary code. If you trust its "
                             "source, load it yourself and torch.save only its state dict") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*$", str(err), re.MULTILINE)
        detail = f" ({reason.group(1)})" if reason else ""
        raise ValueError(f"cannot read weights file {path}: it is not a torch.save file{detail}") from None
    except RuntimeError as err:
        if "TorchScript" not in str(err):
            raise ValueError(f"cannot read weights file {path}: it is not a torch.save or .safetensors file "
                             f"({error_summary(err)})") from None
        raise ValueError(f"cannot read weights file {path}: it is a TorchScript archive (a whole program, such as "
                         "scripts/export.py writes), not a weights file; use the .pth or .safetensors file of "
                         "the weights") from None
    except Exception as err:  # the safe unpickler raises assorted errors (KeyError, ...) on foreign files
        raise ValueError(f"cannot read weights file {path}: it is not a torch.save or .safetensors file "
                         f"({error_summary(err)})") from None


def _starts_like(path: Path) -> str | None:
    """'safetensors' or 'torch' when the file's first bytes are those of that format, an image format's name
    (IMAGE_SIGNATURES, 'WebP') for an image, else None: a safetensors file opens with its header's length
    (8 bytes, little-endian, within the file) and the header's '{'; a torch.save file is a zip archive, or with
    the legacy format a pickle (protocol 2 to 5)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
        size = path.stat().st_size
    except OSError:
        return None
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    legacy = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if head.startswith(b"PK\x03\x04") or legacy:
        return "torch"
    return next((kind for magic, kind in IMAGE_SIGNATURES.items() if head.startswith(magic)),
                "WebP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None)


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The unwrapped state dict of a .pth (or other torch.save file) or .safetensors file, and what was used. The
    format is read from the file's first bytes, so that a renamed file loads too; the suffix decides only for a
    file that is neither."""
    path = Path(path)
    kind = _starts_like(path) or ("safetensors" if path.suffix == ".safetensors" else "torch")
    if kind not in ("safetensors", "torch"):
        raise ValueError(f"cannot read weights file {path}: it is a {kind} image, not weights; give a .pth or "
                         ".safetensors weights file")
    obj = _read_safetensors(path) if kind == "safetensors" else _read_torch(path)
    try:
        return unwrap(obj)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def key_differences(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
                    ) -> tuple[list[str], list[str], list[str]]:
    """The keys of `own` that `given` lacks, those of `given` that `own` lacks, and the common ones whose shapes
    differ (in `own`'s order): what every 'these weights do not fit' message lists."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [k for k, v in own.items() if k in given and given[k].shape != v.shape]
    return missing, unexpected, shapes


def interpolate_states(psnr: Mapping[str, torch.Tensor], gan: Mapping[str, torch.Tensor], alpha: float
                       ) -> dict[str, torch.Tensor]:
    """Network interpolation (paper, section 4.4): ``(1 - alpha) * psnr + alpha * gan`` for every tensor, on the
    PSNR model's device, in float32 at least (half-precision models are blended in float32, as test.py's sweep
    blends into its float32 network). The two must have the same keys and shapes (see `key_differences`)."""
    blend = {}
    for k, v in psnr.items():
        dtype = torch.promote_types(torch.promote_types(v.dtype, gan[k].dtype), torch.float32)
        blend[k] = (1 - alpha) * v.to(dtype) + alpha * gan[k].to(v.device, dtype)
    return blend


def describe_differences(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                         keys: bool = True) -> str | None:
    """'2 missing keys: a, b; 1 tensors of another shape (file vs network): c (2, 3) vs (4, 3)' for weights
    `given` against a network's `own`, or None when they fit. `keys` False: the shapes only (strict_load off)."""
    missing, unexpected, wrong = key_differences(own, given)
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]
    groups = ((missing, "missing keys"), (unexpected, "unexpected keys")) if keys else ()
    parts = [f"{len(items)} {what}: {listing(items, KEYS_SHOWN)}" for items, what in
             (*groups, (shapes, "tensors of another shape (file vs network)")) if items]
    return "; ".join(parts) or None


def check_complete(sd: Mapping[str, torch.Tensor], hparams: Mapping[str, int]) -> None:
    """Refuse a state dict (our layout) that lacks a tensor of RRDBNet(**hparams) or holds one of another shape."""
    with torch.device("meta"):  # the keys and shapes only: no memory, no initialisation
        own = RRDBNet(**hparams).state_dict()
    differences = describe_differences(own, {k: v for k, v in sd.items() if k in own})  # extra keys: not a gap
    if differences:
        raise ValueError(f"incomplete weights for an RRDBNet with {describe_hparams(hparams)} (the size its keys "
                         f"imply): {differences}. Is the file truncated or from another network?")


def load_generator_state(path: str | Path, complete: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, int],
                                                                            str]:
    """Generator weights of any published layout as (our-layout state dict, inferred hparams, a description
    such as 'old-arch layout, params_ema'). With `complete`, every tensor of the implied RRDBNet must be there
    with its shape (callers that load non-strictly pass False)."""
    sd, used = read_weights_file(path)
    sd, part = select_part(sd, GENERATOR_PARTS)
    try:
        layout = detect_layout(sd)
        ours = to_esrgan(sd)
        hparams = infer_hparams(ours)
        if complete:
            check_complete(ours, hparams)
        return ours, hparams, f"{LAYOUT_NAMES[layout]}, {used}{part}"
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def save_generator_state(sd: Mapping[str, torch.Tensor], path: str | Path, layout: Layout = "esrgan") -> None:
    """Write our-layout weights `sd` in `layout`, atomically: .safetensors (with the hparams as metadata) by the
    suffix of `path`, else a torch.save file (a raw state dict; BasicSR's wrapped as {'params': ...})."""
    path = Path(path)
    state = from_esrgan(sd, layout)
    if path.suffix != ".safetensors":
        atomic_save({"params": state} if layout == "basicsr" else state, path)
        return
    try:
        from safetensors.torch import save
    except ImportError:
        raise ValueError(f"{path}: writing .safetensors files needs the optional safetensors package: "
                         "pip install safetensors") from None
    metadata = {name: str(value) for name, value in infer_hparams(sd).items()} | {"layout": layout}
    # In memory, then written by Python (safetensors' own writer fails with a SafetensorError). safetensors
    # stores each tensor as one contiguous buffer.
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))
