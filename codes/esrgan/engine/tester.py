"""The test loop: super-resolve each test set, write the images, score them against GT when there is one.

Network sizes left out of the options are read from the weights. With `path.interp_gan_model` every alpha of
`test.interp_alphas` is tested as the blend `(1 - alpha) * G_psnr + alpha * G_gan` (network interpolation,
ESRGAN paper section 4.4). The log ends with a summary table, also written as `results/<name>/summary.csv`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..archs.layouts import describe_differences, describe_hparams, interpolate_states, load_generator_state
from ..data.paired import PairedImageDataset
from ..metrics import perceptual_index, read_ma_scores
from ..models.networks import build_generator, infer_generator_options, load_weights
from ..options import NetworkGOpt, TestOptions, TestRunOpt, TestSetOpt, dump_yaml
from ..utils.files import atomic_write_text, claimed, claimed_by, os_problem
from ..utils.image import tensor2img, write_image
from ..utils.logger import add_log_file, setup_logging
from ..utils.misc import archive_existing, listing, refuse_inputs_inside, select_device, timestamp
from .evaluate import (
    LABELS,
    METRICS,
    NO_REFERENCE,
    Evaluator,
    bicubic_image,
    describe,
    format_value,
    mean_row,
    mean_scores,
)
from .inference import check_precision, super_resolve

log = logging.getLogger(__name__)

NETWORK_SIZES = ("in_nc", "out_nc", "nf", "nb", "gc")


@dataclass
class SetSummary:
    """One row of the summary: a test set (at one interpolation alpha) and the means of its metrics (SR, then
    `<metric>_bicubic`); a metric the set does not have is absent."""
    set: str
    alpha: float | None
    images: int
    means: dict[str, float]
    seconds_per_image: float


def resolve_generator(o: TestOptions) -> tuple[NetworkGOpt, int]:
    """The generator's options and scale: those given in `o`, the rest read from the weights. `o` is updated, so
    that the options written next to the results hold the values used."""
    values = {k: getattr(o.network_G, k) for k in NETWORK_SIZES} | {"scale": o.scale}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        found = infer_generator_options(o.path.pretrain_model_G)
        values |= {k: found[k] for k in missing}
        log.info("Read from the weights: %s", ", ".join(f"{k}={values[k]}" for k in missing))
        for key in NETWORK_SIZES:
            setattr(o.network_G, key, values[key])
        o.scale = values["scale"]
    scale = values.pop("scale")
    return NetworkGOpt(which_model_G=o.network_G.which_model_G, **values), scale


def _gan_state(net: nn.Module, path: str) -> dict[str, torch.Tensor]:
    """The GAN model of the interpolation sweep, checked to be the same network as the loaded PSNR model."""
    gan, hparams, description = load_generator_state(path)
    differences = describe_differences(net.state_dict(), gan)
    if differences:
        raise ValueError(f"path.interp_gan_model: {path} ({describe_hparams(hparams)}) is not the same network as "
                         f"path.pretrain_model_G, so the two cannot be interpolated (the GAN model's file against "
                         f"the PSNR model): {differences}")
    log.info("Interpolating with the GAN model %s (%s)", path, description)
    return gan


def test(o: TestOptions, option_file: Path | None = None) -> Path:
    """Run every test set of `o` (read from `option_file`) at every interpolation alpha; returns the results
    folder. Another test.py on the same results folder is refused."""
    with claimed(Path(o.path.results_root) / o.name, "test.py"):
        return _test(o, option_file)


def _test(o: TestOptions, option_file: Path | None) -> Path:
    # What can fail on bad input runs before the results folder is touched (earlier results there are moved
    # aside only then); the log file gets these records afterwards.
    setup_logging(backlog=True)
    device = select_device(o.device)
    check_precision(o.test.precision, device)
    net_opt, scale = resolve_generator(o)
    if (net_opt.in_nc, net_opt.out_nc) != (3, 3):
        raise ValueError(f"{o.path.pretrain_model_G}: the network maps {net_opt.in_nc} to {net_opt.out_nc} channels; "
                         "test sets are read and scored as RGB, which needs 3 to 3")
    net_g = build_generator(net_opt, scale)
    for key in ("pretrain_model_G", "interp_gan_model"):
        if (weights := getattr(o.path, key)) and (busy := claimed_by(weights)):
            log.warning("path.%s: %s is in %s, which a run (%s) holds: it may still be training and writing "
                        "these weights", key, weights, *busy)
    load_weights(net_g, o.path.pretrain_model_G, o.path.strict_load, "generator")
    net_g.to(device)
    datasets = [PairedImageDataset(ds.name, scale, ds.dataroot_GT, ds.dataroot_LQ, data_type=ds.data_type,
                                   degradation=ds.degradation, skip_corrupt=ds.skip_corrupt,
                                   scored=bool(set(ds.metrics) - NO_REFERENCE))
                for ds in o.datasets.values()]
    gan = _gan_state(net_g, o.path.interp_gan_model) if o.path.interp_gan_model else None
    ma_scores = {ds.name: _ma_scores(ds, f"datasets.{key}.ma_scores", dataset)
                 for (key, ds), dataset in zip(o.datasets.items(), datasets, strict=True)}
    m = o.metric_options
    evaluator = Evaluator([k for k in METRICS if any(k in ds.metrics for ds in o.datasets.values())], scale,
                          m.niqe_channel, m.lpips_net, m.lpips_weights, device)

    out_dir = Path(o.path.results_root) / o.name
    refuse_inputs_inside(out_dir, {f"datasets.{key}.{field}": getattr(ds, field) for key, ds in o.datasets.items()
                                   for field in ("dataroot_GT", "dataroot_LQ", "ma_scores")}
                         | {"path.pretrain_model_G": o.path.pretrain_model_G,
                            "path.interp_gan_model": o.path.interp_gan_model,
                            "metric_options.lpips_weights": o.metric_options.lpips_weights,
                            "the option file": str(option_file) if option_file is not None else None})
    archived = archive_existing(out_dir)
    out_dir.mkdir(parents=True)
    add_log_file(out_dir / f"test_{o.name}_{timestamp()}.log")
    if archived is not None:
        log.info("Earlier results moved to %s", archived)
    dump_yaml(o, out_dir / f"options_{timestamp()}.yml")
    log.info("Testing %s (x%d) on %s: tile %s, precision %s%s%s", o.path.pretrain_model_G, scale, device,
             o.test.tile or "off", o.test.precision, ", channels_last" if o.test.channels_last else "",
             ", self-ensemble x8" if o.test.self_ensemble else "")
    for ds in o.datasets.values():
        if ds.dataroot_GT is None and not set(ds.metrics) & NO_REFERENCE:
            log.warning("%s has no GT, and its metrics (%s) all need one: its images are upscaled but not scored "
                        "(add niqe to its metrics for a no-reference score)", ds.name, ", ".join(ds.metrics))
    bicubic: dict[tuple[str, str], dict[str, float]] = {}  # the same for every alpha
    summaries = []

    def run_sets(alpha: float | None) -> None:
        for ds_opt, dataset in zip(o.datasets.values(), datasets, strict=True):
            set_dir = out_dir / ds_opt.name / ("" if alpha is None else f"alpha_{alpha:g}")
            summaries.append(_test_set(net_g, dataset, ds_opt, set_dir, scale, o.test, evaluator, bicubic,
                                       ma_scores[ds_opt.name], alpha))

    finished = False
    try:
        if gan is None:
            run_sets(None)
        else:
            psnr = {k: v.detach().clone() for k, v in net_g.state_dict().items()}
            for alpha in o.test.interp_alphas:
                # The blend scripts/net_interp.py writes, so that a blend tested here equals its file.
                net_g.load_state_dict(interpolate_states(psnr, gan, alpha))
                log.info("alpha %g: (1 - %g) * PSNR model + %g * GAN model", alpha, alpha, alpha)
                run_sets(alpha)
        finished = True
    finally:  # a run stopped partway (Ctrl-C) keeps the summary of the sets it finished
        order = [ds.name for ds in o.datasets.values()]
        summaries.sort(key=lambda s: order.index(s.set))  # stable: a set's alphas stay in the given order
        written = bool(summaries) and _write_after(_write_summary_csv, out_dir / "summary.csv", summaries, finished)
        if not finished and written:
            log.warning("Stopped: %s holds the %d sets finished", out_dir / "summary.csv", len(summaries))
        elif not finished and not summaries:
            log.warning("Stopped before a set was finished")
    _log_summary(summaries, scale, evaluator)
    log.info("Summary in %s", out_dir / "summary.csv")
    return out_dir


def _batches(dataset: PairedImageDataset, batch_size: int) -> Iterator[list[dict]]:
    """Samples of `dataset` in dataset order, in batches of up to `batch_size` consecutive images of one LQ size: a
    batch ends early where the size changes, so that at most one batch of decoded images waits (a set of mixed
    sizes held whole in memory, and wrote nothing until its end, when images waited for others of their size)."""
    batch: list[dict] = []
    for i in range(len(dataset)):
        sample = dataset.whole_image(i)
        if sample is None:  # unreadable, with skip_corrupt: left out
            continue
        if batch and sample["LQ"].shape != batch[0]["LQ"].shape:
            yield batch
            batch = []
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ma_scores(ds: TestSetOpt, key: str, dataset: PairedImageDataset) -> dict[str, float] | None:
    """The Ma scores of a set's images (for the perceptual index; `key` names the option), checked to cover every
    image."""
    if ds.ma_scores is None:
        if "niqe" in ds.metrics:
            log.info("%s: no Ma scores (datasets.<key>.ma_scores), so the perceptual index PI = ((10 - Ma) + NIQE) "
                     "/ 2 is not computed and NIQE is reported alone", ds.name)
        return None
    try:
        scores = read_ma_scores(ds.ma_scores)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    missing = [name for name in dataset.keys if name not in scores]
    if missing:
        raise ValueError(f"{key}: {ds.ma_scores}: no Ma score for {len(missing)} of the {len(dataset)} images of "
                         f"{ds.name}: {listing(missing)}")
    return scores


def _test_set(net: nn.Module, dataset: PairedImageDataset, ds_opt: TestSetOpt, set_dir: Path, scale: int,
              run: TestRunOpt, evaluator: Evaluator, bicubic: dict[tuple[str, str], dict[str, float]],
              ma_scores: dict[str, float] | None, alpha: float | None) -> SetSummary:
    label = ds_opt.name if alpha is None else f"{ds_opt.name} (alpha {alpha:g})"
    skip = set(evaluator.metrics) - set(ds_opt.metrics)
    rows, finished = {}, False
    try:
        for batch in _batches(dataset, run.batch_size):
            start = time.perf_counter()
            sr_batch = super_resolve(net, torch.stack([s["LQ"] for s in batch]), scale, tile=run.tile,
                                     tile_overlap=run.tile_overlap, precision=run.precision,
                                     channels_last=run.channels_last, self_ensemble=run.self_ensemble)
            seconds = (time.perf_counter() - start) / len(batch)
            for sample, sr_tensor in zip(batch, sr_batch, strict=True):
                name = sample["name"]
                sr = tensor2img(sr_tensor)
                gt = tensor2img(sample["GT"]) if "GT" in sample else None
                ours = evaluator.score(sr, gt, name, skip, group=ds_opt.name)
                if ma_scores is not None:
                    ours |= {"ma": ma_scores[name], "pi": perceptual_index(ma_scores[name], ours["niqe"])}
                key = (ds_opt.name, name)
                if key not in bicubic:
                    bicubic[key] = (evaluator.score(bicubic_image(sample["LQ"], scale), gt, f"{name} (bicubic)",
                                                    skip, group=None)
                                    if evaluator.applicable(gt is not None, skip) else {})
                write_image(set_dir / f"{name}.png", sr)  # after its scores: an image on disk has its row
                rows[name] = {"name": name, "seconds": seconds} | ours | {f"{k}_bicubic": v
                                                                          for k, v in bicubic[key].items()}
                if ours:
                    log.info("%s/%s: %s (bicubic: %s)", label, name, describe(ours), describe(bicubic[key]))
        finished = True
    finally:  # a run stopped partway (Ctrl-C) keeps the rows of the images it finished
        ordered = [rows[name] for name in dataset.keys if name in rows]
        written = bool(ordered) and _write_after(_write_csv, set_dir / "metrics.csv", ordered, finished)
        if not finished:
            log.warning("%s stopped after %d of its %d images%s", label, len(ordered), len(dataset),
                        f"; their rows are in {set_dir / 'metrics.csv'}" if written else "")
    if not ordered:
        raise dataset.none_read()
    columns = [k for k in ordered[0] if k not in ("name", "seconds")]
    summary = SetSummary(ds_opt.name, alpha, len(ordered), mean_scores(ordered, columns),
                         seconds_per_image=float(np.mean([r["seconds"] for r in ordered])))
    if summary.means:
        means = {k: v for k, v in summary.means.items() if not k.endswith("_bicubic")}
        bic = {k.removesuffix("_bicubic"): v for k, v in summary.means.items() if k.endswith("_bicubic")}
        log.info("%s (%d images, %d border pixels cropped): %s | bicubic %s | %.3f s/image", label, summary.images,
                 scale, describe(means), describe(bic), summary.seconds_per_image)
    else:
        log.info("%s: %d images upscaled (no GT, no metrics)", label, summary.images)
    log.info("%s: images and metrics.csv in %s", label, set_dir)
    return summary


def _summary_columns(summaries: list[SetSummary]) -> list[str]:
    """The metric columns of the summary: every metric some set has, then their bicubic counterparts."""
    present = {k for s in summaries for k in s.means}
    ours = [k for k in (*METRICS, "ma", "pi") if k in present]
    return ours + [f"{k}_bicubic" for k in ours if f"{k}_bicubic" in present]


def _log_summary(summaries: list[SetSummary], scale: int, evaluator: Evaluator) -> None:
    sweep = summaries[0].alpha is not None
    columns = _summary_columns(summaries)
    heads = [("bic." if k.endswith("_bicubic") else "") + LABELS.get(k.removesuffix("_bicubic"), k) for k in columns]
    widths = [max(len(h), 7) for h in heads]
    width = max(len("set"), *(len(s.set) for s in summaries))
    head = f"{'set':<{width}} " + ("alpha " if sweep else "") + "images " + " ".join(
        f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)) + "  s/image"
    notes = "; bic. = bicubic upscaling"
    if "niqe" in evaluator.metrics:
        notes += f"; NIQE on {'Y' if evaluator.niqe_channel == 'y' else 'gray'}, lower is better"
    if "lpips" in evaluator.metrics:
        notes += "; LPIPS lower is better"
    lines = [f"Summary (PSNR/SSIM on Y, {scale} border pixels cropped{notes}):", head]
    for s in summaries:
        cells = " ".join(f"{format_value(k, s.means[k]) if k in s.means else '-':>{w}}"
                         for k, w in zip(columns, widths, strict=True))
        alpha = f"{s.alpha:5g} " if sweep else ""
        lines.append(f"{s.set:<{width}} {alpha}{s.images:6d} {cells} {s.seconds_per_image:8.3f}")
    for metric, reason in evaluator.unavailable.items():
        lines.append(f"{LABELS[metric]} n/a: {reason}")
    log.info("\n".join(lines))


def _write_summary_csv(path: Path, summaries: list[SetSummary]) -> None:
    """One row per set (and alpha); empty cells for metrics a set does not have (e.g. PSNR without GT)."""
    sweep = summaries[0].alpha is not None
    columns = _summary_columns(summaries)
    fields = ["set", *(["alpha"] if sweep else []), "images", *columns, "seconds_per_image"]
    rows = [{"set": s.set, **({"alpha": s.alpha} if sweep else {}), "images": s.images,
             "seconds_per_image": s.seconds_per_image} | {k: s.means.get(k, "") for k in columns} for s in summaries]
    _write_rows(path, fields, rows)


def _write_csv(path: Path, rows: list[dict]) -> None:
    _write_rows(path, list(rows[0]), rows + ([mean_row(rows)] if len(rows[0]) > 2 else []))  # metrics: a mean row


def _write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """A CSV file, written atomically: an earlier one stays whole when the disk is full."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _write_after(write: Callable[[Path, list], None], path: Path, rows: list, finished: bool) -> bool:
    """`write(path, rows)` in a `finally` block: where the block ends with an error already (not `finished`), a
    failure of the write is logged rather than put in that error's place. Whether it wrote."""
    try:
        write(path, rows)
    except OSError as err:
        if finished:
            raise
        log.error("%s not written (%s)", path, os_problem(err))
        return False
    return True
