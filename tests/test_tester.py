"""Specification of test.py (``esrgan.engine.tester.test``, run in-process) and of scripts/upscale.py."""

import csv
import importlib.util
import os
import runpy
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from esrgan import options
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.engine.tester import test as run_test
from esrgan.options import REPO_ROOT, parse_options
from esrgan.utils.image import write_image


def save_tiny_model(path, scale: int = 4, nb: int = 1, seed: int = 0):
    """A tiny RRDBNet (nf 8, gc 4) that computes nearest upsampling plus a random residual from its trunk: like a
    trained model, its output is close to the image and depends on the pixels around (PSNR about 19 dB here)."""
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, nf=8, nb=nb, gc=4, scale=scale)
    identity = torch.zeros(8, 8, 3, 3)
    identity[range(8), range(8), 1, 1] = 1
    with torch.no_grad():
        for conv in (net.conv_first, net.upconv1, getattr(net, "upconv2", None), net.HRconv, net.conv_last):
            if conv is not None:
                conv.weight.copy_(identity[: conv.out_channels, : conv.in_channels])
                conv.bias.zero_()
    torch.save(net.state_dict(), path)
    return path


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uint8 RGB image with structure at several scales (so PSNR figures are not degenerate)."""
    coarse = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + 0.05 * rng.random((h, w, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """GT folder with images `a`, `b` (48x64) and `c` (40x32); an LQ-only folder with `d` (10x12)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (48, 64), "b": (48, 64), "c": (40, 32)}.items():
        write_image(root / "gt" / f"{name}.png", smooth_image(rng, h, w))
    write_image(root / "lq" / "d.png", smooth_image(rng, 10, 12))
    save_tiny_model(root / "psnr.pth")
    save_tiny_model(root / "gan.pth", seed=1)
    return root


def opts(data, results, **sections) -> options.TestOptions:
    """TestOptions for the GT set (and the LQ-only set with `lq_only=True`) on the tiny PSNR model."""
    lq_only = sections.pop("lq_only", False)
    raw = {"name": "spec", "device": "cpu",
           "datasets": {"gt": {"dataroot_GT": str(data / "gt")}},
           "network_G": {"nf": 8, "nb": 1, "gc": 4}, "scale": 4,
           "path": {"pretrain_model_G": str(data / "psnr.pth"), "results_root": str(results)}}
    if lq_only:
        raw["datasets"]["lq"] = {"dataroot_LQ": str(data / "lq")}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        if value is None:
            del raw[key]
    return parse_options(options.TestOptions, raw)


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def metrics(path) -> dict[str, tuple[float, float]]:
    """name -> (psnr, ssim) of a metrics.csv."""
    return {r["name"]: (float(r["psnr"]), float(r["ssim"])) for r in read_csv(path)}


@pytest.fixture(scope="module")
def plain_run(data, tmp_path_factory):
    return run_test(opts(data, tmp_path_factory.mktemp("results"), lq_only=True))


# ---------------------------------------------------------------------------------------------- results
def test_each_set_gets_its_images_and_metrics_and_the_run_a_summary_csv(plain_run):
    assert cv2.imread(str(plain_run / "gt" / "a.png")).shape == (48, 64, 3)
    assert cv2.imread(str(plain_run / "gt" / "c.png")).shape == (40, 32, 3)
    assert cv2.imread(str(plain_run / "lq" / "d.png")).shape == (40, 48, 3)
    assert [r["name"] for r in read_csv(plain_run / "gt" / "metrics.csv")] == ["a", "b", "c", "mean"]
    assert [r["name"] for r in read_csv(plain_run / "lq" / "metrics.csv")] == ["d"]  # no GT, no metrics

    rows = read_csv(plain_run / "summary.csv")
    assert list(rows[0]) == ["set", "images", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "seconds_per_image"]
    assert [(r["set"], r["images"]) for r in rows] == [("gt", "3"), ("lq", "1")]
    mean = read_csv(plain_run / "gt" / "metrics.csv")[-1]
    for key in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic"):
        assert float(rows[0][key]) == pytest.approx(float(mean[key]), abs=1e-9)
        assert rows[1][key] == ""
    assert float(rows[1]["seconds_per_image"]) > 0


def test_the_log_ends_with_the_summary_table(plain_run):
    (log_file,) = plain_run.glob("test_spec_*.log")
    text = log_file.read_text(encoding="utf-8")
    table = text[text.index("Summary (PSNR/SSIM on Y, 4 border pixels cropped"):].splitlines()
    assert table[1].split() == ["set", "images", "PSNR", "SSIM", "bic.PSNR", "bic.SSIM", "s/image"]
    assert table[2].split()[:2] == ["gt", "3"] and table[3].split()[:6] == ["lq", "1", "-", "-", "-", "-"]


def test_tiled_runs_score_as_untiled_ones(plain_run, data, tmp_path):
    tiled = run_test(opts(data, tmp_path / "overlap", test={"tile": 8, "tile_overlap": 4}))
    for name, (psnr, _) in metrics(tiled / "gt" / "metrics.csv").items():
        assert psnr == pytest.approx(metrics(plain_run / "gt" / "metrics.csv")[name][0], abs=0.05)
    # The control: without overlap the tiles show (so the run above did work in tiles).
    seams = run_test(opts(data, tmp_path / "seams", test={"tile": 8, "tile_overlap": 0}))
    differences = [np.abs(cv2.imread(str(seams / "gt" / f"{name}.png")).astype(int)
                          - cv2.imread(str(plain_run / "gt" / f"{name}.png"))).max() for name in "abc"]
    assert min(differences) > 10


def test_batches_hold_consecutive_images_of_one_size_and_never_wait_for_images_further_on():
    """A set of mixed sizes used to be decoded whole before its first batch (images waited for others of their
    size), holding every image in memory and writing nothing until the set's end."""
    from esrgan.engine.tester import _batches

    shapes = [(3, 4, 4), (3, 4, 4), (3, 4, 5), None, (3, 4, 5), (3, 4, 5), (3, 4, 4), (3, 6, 6)]
    decoded = []

    class Mixed:
        def __len__(self) -> int:
            return len(shapes)

        def whole_image(self, i: int):
            decoded.append(i)
            return None if shapes[i] is None else {"LQ": torch.zeros(shapes[i]), "name": str(i)}

    names = []
    for batch in _batches(Mixed(), 2):
        names.append([s["name"] for s in batch])
        assert len(decoded) <= int(batch[-1]["name"]) + 2  # at most the next image decoded ahead
    assert names == [["0", "1"], ["2", "4"], ["5"], ["6"], ["7"]]


def test_batches_of_same_size_images_give_the_same_results(plain_run, data, tmp_path):
    batched = run_test(opts(data, tmp_path, test={"batch_size": 2}))
    plain = metrics(plain_run / "gt" / "metrics.csv")
    for name, (psnr, ssim) in metrics(batched / "gt" / "metrics.csv").items():
        assert (psnr, ssim) == pytest.approx(plain[name], abs=1e-4)


def test_the_seconds_of_a_batch_are_shared_out_over_its_images(data, tmp_path, monkeypatch):
    """Each batch takes one (fake) second: a and b, batched together, 0.5 s each; c, alone, 1 s."""
    from esrgan.engine import tester

    class OneSecondPerCall:
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 1.0
            return self.now

    monkeypatch.setattr(tester, "time", OneSecondPerCall())
    out = run_test(opts(data, tmp_path, test={"batch_size": 2}))
    rows = read_csv(out / "gt" / "metrics.csv")
    assert [(r["name"], float(r["seconds"])) for r in rows[:3]] == [("a", 0.5), ("b", 0.5), ("c", 1.0)]
    assert float(read_csv(out / "summary.csv")[0]["seconds_per_image"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("stop_at", ["c", "d"], ids=["inside-a-set", "in-the-second-set"])
def test_a_run_stopped_partway_keeps_the_scores_and_summary_it_finished(plain_run, data, tmp_path, monkeypatch,
                                                                       stop_at):
    from esrgan.engine.evaluate import Evaluator

    score = Evaluator.score

    def ctrl_c(self, sr, gt, name, skip=(), **kwargs):
        if name == stop_at:
            raise KeyboardInterrupt
        return score(self, sr, gt, name, skip, **kwargs)

    monkeypatch.setattr(Evaluator, "score", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_test(opts(data, tmp_path, lq_only=True))
    out = tmp_path / "spec"
    done = ["a", "b"] if stop_at == "c" else ["a", "b", "c"]
    plain = metrics(plain_run / "gt" / "metrics.csv")
    assert metrics(out / "gt" / "metrics.csv") == {name: plain[name] for name in done} | {
        "mean": pytest.approx(tuple(np.mean([plain[name] for name in done], axis=0)))}
    assert sorted(p.stem for p in (out / "gt").glob("*.png")) == done  # an image on disk has its scores
    if stop_at == "c":
        assert not (out / "summary.csv").exists()
    else:
        assert [r["set"] for r in read_csv(out / "summary.csv")] == ["gt"]
    (log_file,) = out.glob("test_spec_*.log")
    stopped = "gt stopped after 2 of its 3 images" if stop_at == "c" else "lq stopped after 0 of its 1 images"
    assert stopped in log_file.read_text(encoding="utf-8")


def test_a_disk_that_fills_reports_the_write_that_failed_and_leaves_no_empty_csv(data, tmp_path, monkeypatch,
                                                                                   full_disk):
    """The CSVs written on the way out (in `finally`) used to fail too, leaving an empty summary.csv, and their
    error took the place of the image's."""
    from esrgan.engine import tester

    def fills_at_b(path, image):
        if path.name == "b.png":
            full_disk()
            raise OSError(28, "No space left on device", str(path))
        write_image(path, image)

    monkeypatch.setattr(tester, "write_image", fills_at_b)
    with pytest.raises(OSError) as info:
        run_test(opts(data, tmp_path, lq_only=True))
    out = tmp_path / "spec"
    assert str(info.value) == f"[Errno 28] No space left on device: '{out / 'gt' / 'b.png'}'"
    assert sorted(p.name for p in (out / "gt").iterdir()) == ["a.png"] and not (out / "summary.csv").exists()
    (log_file,) = out.glob("test_spec_*.log")
    text = log_file.read_text(encoding="utf-8")
    assert (f"{out / 'gt' / 'metrics.csv'} not written ({out / 'gt' / 'metrics.csv'}: No space left on device)\n"
            in text)
    assert "gt stopped after 1 of its 3 images\n" in text


def test_weights_of_a_run_still_training_are_tested_with_a_warning_that_says_so(data, tmp_path):
    from esrgan.utils.files import claimed

    run = tmp_path / "experiments" / "busy"
    (run / "models").mkdir(parents=True)
    shutil.copy(data / "psnr.pth", run / "models" / "latest_G.pth")
    with claimed(run, "train.py"):  # as train.py holds its run folder while it runs
        out = run_test(opts(data, tmp_path / "results", path={"pretrain_model_G": str(run / "models" /
                                                                                     "latest_G.pth")}))
    (log_file,) = out.glob("test_spec_*.log")
    assert (f"WARNING: path.pretrain_model_G: {run / 'models' / 'latest_G.pth'} is in {run}, which a run (process "
            f"{os.getpid()}) holds: it may still be training and writing these weights") in log_file.read_text()
    assert [r["name"] for r in read_csv(out / "gt" / "metrics.csv")] == ["a", "b", "c", "mean"]


def test_a_metrics_csv_that_cannot_be_written_after_its_set_finished_stops_the_run(data, tmp_path, monkeypatch):
    """Only a run already stopped by another error logs a failed CSV write instead of raising it; a finished set's
    metrics.csv that cannot be written is the run's error."""
    from esrgan.engine import tester
    from esrgan.utils.files import atomic_write_text

    def disk_full_for_metrics(path, text):
        if path.name == "metrics.csv":
            raise OSError(28, "No space left on device", str(path))
        atomic_write_text(path, text)

    monkeypatch.setattr(tester, "atomic_write_text", disk_full_for_metrics)
    with pytest.raises(OSError) as info:
        run_test(opts(data, tmp_path))
    out = tmp_path / "spec"
    assert info.value.filename == str(out / "gt" / "metrics.csv")
    assert not (out / "summary.csv").exists()


def test_sets_with_images_of_the_same_names_each_get_their_own_bicubic_scores(data, tmp_path):
    """The bicubic baseline is computed once per image for all alphas: per set and image, not per image name."""
    other = tmp_path / "other"
    write_image(other / "a.png", smooth_image(np.random.default_rng(7), 48, 64))
    alone = run_test(opts(data, tmp_path / "alone", datasets={"gt": {"dataroot_GT": str(other)}}))
    both = run_test(opts(data, tmp_path / "both", datasets={"other": {"dataroot_GT": str(other)}}))
    expected = read_csv(alone / "gt" / "metrics.csv")[0]
    got = {r["name"]: r for r in read_csv(both / "other" / "metrics.csv")}["a"]
    theirs = {r["name"]: r for r in read_csv(both / "gt" / "metrics.csv")}["a"]
    assert float(got["psnr_bicubic"]) == pytest.approx(float(expected["psnr_bicubic"]), abs=1e-9)
    assert float(got["psnr_bicubic"]) != pytest.approx(float(theirs["psnr_bicubic"]), abs=0.1)


def test_a_set_without_full_reference_metrics_upscales_gt_images_too_small_to_score(data, tmp_path):
    """A GT image of 8x8 has a 2x2 LQ: too small for PSNR and SSIM after the border crop, but a set without
    those metrics only upscales it."""
    write_image(tmp_path / "tiny" / "t.png", smooth_image(np.random.default_rng(3), 8, 8))
    out = run_test(opts(data, tmp_path / "results", datasets={"gt": {"dataroot_GT": str(tmp_path / "tiny"),
                                                                     "metrics": []}}))
    assert cv2.imread(str(out / "gt" / "t.png")).shape == (8, 8, 3)


def test_an_unreadable_image_with_skip_corrupt_is_left_out_once(data, tmp_path):
    gt = tmp_path / "gt"
    for name in "abc":
        (gt / f"{name}.png").parent.mkdir(exist_ok=True)
        (gt / f"{name}.png").write_bytes((data / "gt" / f"{name}.png").read_bytes())
    (gt / "b.png").write_bytes((data / "gt" / "b.png").read_bytes()[:200])  # the header survives
    out = run_test(opts(data, tmp_path / "results", datasets={"gt": {"dataroot_GT": str(gt), "skip_corrupt": True}}))
    assert [r["name"] for r in read_csv(out / "gt" / "metrics.csv")] == ["a", "c", "mean"]
    (log_file,) = out.glob("test_spec_*.log")
    assert log_file.read_text(encoding="utf-8").count("gt/a: PSNR") == 1


def test_a_set_with_no_readable_image_is_named_and_the_sets_before_it_are_kept(data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes((data / "gt" / "a.png").read_bytes()[:200])  # the header survives
    o = opts(data, tmp_path / "results", datasets={"gt": {"dataroot_GT": str(data / "gt")},
                                                    "broken": {"dataroot_GT": str(broken), "skip_corrupt": True}})
    with pytest.raises(ValueError) as info:
        run_test(o)
    assert str(info.value) == ("dataset broken: none of its 1 images could be read (skip_corrupt left each out, "
                               "see the warnings above); check the data")
    out = tmp_path / "results" / "spec"
    assert [r["set"] for r in read_csv(out / "summary.csv")] == ["gt"]
    assert not (out / "broken" / "metrics.csv").exists()


def test_an_option_file_inside_the_results_folder_it_would_move_aside_is_refused(data, tmp_path):
    """A copy of the options kept in the results folder and run again would go into the archive, and the same
    command would then fail."""
    from esrgan.engine.tester import test

    option_file = tmp_path / "results" / "spec" / "mine.yml"
    option_file.parent.mkdir(parents=True)
    option_file.write_text("name: spec\n")
    with pytest.raises(ValueError, match=r"^the option file \(.*mine\.yml\) inside .*spec, the folder of an "
                                         r"earlier run of this name"):
        test(opts(data, tmp_path / "results"), option_file=option_file)
    assert option_file.is_file()


def test_test_data_inside_the_results_folder_it_would_move_aside_is_refused_and_nothing_moves(data, tmp_path):
    gt = tmp_path / "results" / "spec" / "s"  # an earlier run's output, or data put there by mistake
    for name in "ab":
        write_image(gt / f"{name}.png", np.zeros((16, 16, 3), dtype=np.uint8))
    o = opts(data, tmp_path / "results", datasets={"s": {"dataroot_GT": str(gt)}})
    with pytest.raises(ValueError) as info:
        run_test(o)
    assert str(info.value) == (f"datasets.s.dataroot_GT ({gt}) inside {tmp_path / 'results' / 'spec'}, the folder "
                               "of an earlier run of this name, which a new run moves aside: give the run another "
                               "name, or move the data out of it")
    assert sorted(p.name for p in gt.iterdir()) == ["a.png", "b.png"]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["spec"]


@pytest.mark.skipif(os.name != "posix", reason="results folders are claimed with POSIX locks")
def test_a_second_test_of_a_results_folder_in_use_is_refused(data, tmp_path):
    from esrgan.utils.files import claimed

    with claimed(tmp_path / "results" / "spec", "test.py"), pytest.raises(OSError) as info:
        run_test(opts(data, tmp_path / "results"))
    assert str(info.value) == (f"{tmp_path / 'results' / 'spec'} is in use by another test.py (process "
                               f"{os.getpid()}); wait for it to end or stop it, or give this one another name")
    assert not (tmp_path / "results").exists()  # nothing written, and the lock's folder removed again


def test_fp16_on_the_cpu_stops_before_any_image_is_written(data, tmp_path):
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        run_test(opts(data, tmp_path, test={"precision": "fp16"}))
    assert not list(tmp_path.rglob("*.png"))


# ------------------------------------------------------------------------------------ inferred network
def test_network_sizes_and_scale_left_out_are_read_from_the_weights(data, tmp_path):
    save_tiny_model(tmp_path / "x2.pth", scale=2, nb=2)
    o = opts(data, tmp_path, network_G=None, scale=None, path={"pretrain_model_G": str(tmp_path / "x2.pth")})
    assert (o.scale, o.network_G.nf) == (None, None)
    out = run_test(o)
    assert cv2.imread(str(out / "gt" / "a.png")).shape == (48, 64, 3)  # x2 from 24x32
    (written,) = out.glob("options_*.yml")
    resolved = yaml.safe_load(written.read_text())
    assert resolved["scale"] == 2
    assert resolved["network_G"] == {"which_model_G": "RRDBNet", "in_nc": 3, "out_nc": 3, "nf": 8, "nb": 2, "gc": 4}


def test_a_model_that_is_not_rgb_to_rgb_is_refused_before_the_results_folder_is_touched(data, tmp_path):
    torch.save(RRDBNet(1, 1, nf=8, nb=1, gc=4).state_dict(), tmp_path / "gray.pth")
    o = opts(data, tmp_path / "results", network_G=None, path={"pretrain_model_G": str(tmp_path / "gray.pth")})
    with pytest.raises(ValueError, match=r"gray\.pth: the network maps 1 to 1 channels; test sets are read and "
                                         r"scored as RGB, which needs 3 to 3"):
        run_test(o)
    assert not (tmp_path / "results").exists()


def test_given_sizes_that_disagree_with_the_weights_list_the_tensors(data, tmp_path):
    with pytest.raises(ValueError, match=r"30 missing keys: RRDB_trunk\.1\.RDB1\.conv1\.weight.*nf=8, nb=1, gc=4"):
        run_test(opts(data, tmp_path, network_G={"nb": 2}))


# ------------------------------------------------------------------------------------ interpolation sweep
@pytest.fixture(scope="module")
def sweep(data, tmp_path_factory):
    return run_test(opts(data, tmp_path_factory.mktemp("sweep"), lq_only=True, test={"interp_alphas": [0.0, 0.5, 1.0]},
                         path={"interp_gan_model": str(data / "gan.pth")}))


def test_the_sweep_writes_a_folder_and_a_summary_row_per_alpha(sweep):
    assert sorted(p.name for p in (sweep / "gt").iterdir()) == ["alpha_0", "alpha_0.5", "alpha_1"]
    for alpha in ("0", "0.5", "1"):
        assert {p.name for p in (sweep / "gt" / f"alpha_{alpha}").iterdir()} == {"a.png", "b.png", "c.png",
                                                                                "metrics.csv"}
    rows = read_csv(sweep / "summary.csv")
    assert list(rows[0])[:3] == ["set", "alpha", "images"]
    assert [(r["set"], float(r["alpha"])) for r in rows] == [("gt", 0.0), ("gt", 0.5), ("gt", 1.0),
                                                             ("lq", 0.0), ("lq", 0.5), ("lq", 1.0)]
    assert len({r["psnr"] for r in rows[:3]}) == 3 and {r["psnr"] for r in rows[3:]} == {""}
    assert (sweep / "lq" / "alpha_0.5" / "d.png").is_file()


def test_alpha_0_is_the_psnr_model_and_alpha_1_the_gan_model(sweep, plain_run, data, tmp_path):
    assert metrics(sweep / "gt" / "alpha_0" / "metrics.csv") == metrics(plain_run / "gt" / "metrics.csv")
    gan_run = run_test(opts(data, tmp_path, path={"pretrain_model_G": str(data / "gan.pth")}))
    for name, scores in metrics(sweep / "gt" / "alpha_1" / "metrics.csv").items():
        assert scores == pytest.approx(metrics(gan_run / "gt" / "metrics.csv")[name], abs=1e-4)


def test_every_alpha_of_a_sweep_blends_the_psnr_model_as_loaded_not_the_blend_before_it(data, tmp_path):
    """alpha 0.6 after alpha 0.5 is 0.4 * PSNR + 0.6 * GAN, the file net_interp.py would write, not a blend of the
    previous blend."""
    from esrgan.archs.layouts import interpolate_states

    psnr, gan = (torch.load(data / f"{name}.pth", weights_only=True) for name in ("psnr", "gan"))
    torch.save(interpolate_states(psnr, gan, 0.6), tmp_path / "blend.pth")
    blend = run_test(opts(data, tmp_path / "blend", path={"pretrain_model_G": str(tmp_path / "blend.pth")}))
    sweep = run_test(opts(data, tmp_path / "sweep", test={"interp_alphas": [0.5, 0.6]},
                          path={"interp_gan_model": str(data / "gan.pth")}))
    for name, scores in metrics(sweep / "gt" / "alpha_0.6" / "metrics.csv").items():
        assert scores == pytest.approx(metrics(blend / "gt" / "metrics.csv")[name], abs=1e-4)


def test_a_gan_model_of_another_size_cannot_be_interpolated(data, tmp_path):
    save_tiny_model(tmp_path / "other.pth", nb=2)
    with pytest.raises(ValueError, match=r"interp_gan_model: .*other.pth \(nf=8, nb=2.*not the same network"):
        run_test(opts(data, tmp_path, path={"interp_gan_model": str(tmp_path / "other.pth")}))


@pytest.mark.parametrize("alphas, message", [([], "give at least one alpha"), ([0.5, 0.50], "repeats a value"),
                                             ([0.5, 0.5000001], r"\[0.5, 0.5000001\] repeats a value \(each alpha"),
                                             ([1.5], r"1.5 is out of range; it must be in \[0, 1\]")])
def test_sweep_alphas_are_checked_with_the_options(data, tmp_path, alphas, message):
    with pytest.raises(options.OptionError, match=message):
        opts(data, tmp_path, path={"interp_gan_model": str(data / "gan.pth")}, test={"interp_alphas": alphas})


# -------------------------------------------------------------------------------------------- upscale.py
def test_upscale_writes_each_kind_as_it_came_and_skips_unreadable_files(data, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    rgb = smooth_image(rng, 6, 5)
    cv2.imwrite(str(inputs / "gray.png"), rgb[:, :, 0])
    cv2.imwrite(str(inputs / "rgba.png"), np.dstack([rgb, np.full((6, 5), 200, np.uint8)]))
    cv2.imwrite(str(inputs / "deep.png"), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(inputs / "photo.jpg"), rgb)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "upscale.py"), str(inputs), "-o", "out",
                             "--model", str(data / "psnr.pth"), "--tile", "4"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    kinds = {}
    for path in sorted((tmp_path / "out").iterdir()):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        kinds[path.name] = (img.dtype.name, img.shape)
    assert kinds == {"deep.png": ("uint16", (24, 20, 3)), "gray.png": ("uint8", (24, 20)),
                     "photo.png": ("uint8", (24, 20, 3)), "rgba.png": ("uint8", (24, 20, 4))}
    assert f"skipped {inputs / 'broken.png'}: cannot decode image" in result.stderr
    assert "4 images upscaled x4" in result.stderr and "1 skipped (unreadable)" in result.stderr


def upscale(*args: str) -> int:
    return runpy.run_path(str(REPO_ROOT / "scripts" / "upscale.py"))["main"](list(args))


def test_upscale_refuses_to_overwrite_an_input(data, tmp_path, capsys):
    write_image(tmp_path / "img.png", smooth_image(np.random.default_rng(2), 6, 5))
    before = (tmp_path / "img.png").read_bytes()
    assert upscale(str(tmp_path / "img.png"), str(tmp_path / "img.png"), "-o", str(tmp_path), "--model",
                   str(data / "psnr.pth")) == 2  # given twice, named once
    assert f"refusing to overwrite input files: {tmp_path / 'img.png'}; choose" in capsys.readouterr().err
    assert (tmp_path / "img.png").read_bytes() == before


def test_upscale_refuses_two_inputs_that_would_share_an_output(data, tmp_path, capsys):
    for suffix in (".png", ".jpg"):
        cv2.imwrite(str(tmp_path / f"img{suffix}"), smooth_image(np.random.default_rng(2), 6, 5))
    assert upscale(str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(data / "psnr.pth")) == 2
    assert "several inputs would be written to the same output file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_upscale_does_an_image_named_twice_once(data, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_image(inputs / "img.png", smooth_image(np.random.default_rng(2), 6, 5))
    assert upscale(str(inputs), str(inputs / "img.png"), "-o", str(tmp_path / "out"), "--model",
                   str(data / "psnr.pth")) == 0
    assert "1 images upscaled x4" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img.png"]
    (inputs / "alias.png").symlink_to(inputs / "img.png")  # another name for it: an image of its own
    assert upscale(str(inputs), "-o", str(tmp_path / "out2"), "--model", str(data / "psnr.pth")) == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["alias.png", "img.png"]


def test_upscale_with_nothing_readable_exits_1(data, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"nothing")
    assert upscale(str(tmp_path / "broken.png"), "-o", str(tmp_path / "out"), "--model", str(data / "psnr.pth")) == 1
    assert "0 images upscaled x4" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- perceptual metrics
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two 200x200 crops of demo photos (four 96x96 NIQE blocks once 4 pixels are cropped) with their Ma scores,
    and an LQ-only folder with one 50x50 image."""
    root = tmp_path_factory.mktemp("photos")
    demo = REPO_ROOT / "datasets" / "demo" / "train"
    (root / "gt").mkdir()
    (root / "lq").mkdir()
    cv2.imwrite(str(root / "gt" / "chelsea.png"), cv2.imread(str(demo / "chelsea.png"))[50:250, 100:300])
    cv2.imwrite(str(root / "gt" / "coffee.png"), cv2.imread(str(demo / "coffee.png"))[:200, :200])
    cv2.imwrite(str(root / "lq" / "small.png"), cv2.imread(str(demo / "rocket.png"))[:200:4, :200:4])
    (root / "ma.csv").write_text("name,ma\nchelsea.png,6.5\ncoffee.png,5.25\n", encoding="utf-8")
    save_tiny_model(root / "psnr.pth")
    save_tiny_model(root / "gan.pth", seed=1)
    return root


def perceptual_opts(photos, results, **sections) -> options.TestOptions:
    raw = {"name": "perceptual", "device": "cpu", "scale": 4, "network_G": {"nf": 8, "nb": 1, "gc": 4},
           "datasets": {"photos": {"dataroot_GT": str(photos / "gt"), "metrics": ["psnr", "ssim", "niqe", "lpips"],
                                   "ma_scores": str(photos / "ma.csv")},
                        "small": {"dataroot_LQ": str(photos / "lq"), "metrics": ["psnr", "niqe"]}},
           "path": {"pretrain_model_G": str(photos / "psnr.pth"), "results_root": str(results)},
           "metric_options": {"lpips_weights": str(photos / "missing_alexnet.pth")}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_options(options.TestOptions, raw, check_paths=False)


@pytest.fixture(scope="module")
def perceptual_run(photos, tmp_path_factory):
    return run_test(perceptual_opts(photos, tmp_path_factory.mktemp("results")))


def test_each_image_gets_its_sets_metrics_the_perceptual_index_and_the_bicubic_baseline(perceptual_run, photos):
    from esrgan.data.paired import PairedImageDataset
    from esrgan.engine.evaluate import bicubic_image
    from esrgan.metrics import calculate_niqe, calculate_psnr
    from esrgan.utils.image import read_image, to_uint8

    rows = read_csv(perceptual_run / "photos" / "metrics.csv")
    assert list(rows[0]) == ["name", "seconds", "psnr", "ssim", "niqe", "lpips", "ma", "pi", "psnr_bicubic",
                             "ssim_bicubic", "niqe_bicubic", "lpips_bicubic"]
    assert [r["name"] for r in rows] == ["chelsea", "coffee", "mean"]
    sr = to_uint8(read_image(perceptual_run / "photos" / "chelsea.png"))
    gt = to_uint8(read_image(photos / "gt" / "chelsea.png"))
    assert float(rows[0]["psnr"]) == pytest.approx(calculate_psnr(sr, gt, 4), abs=1e-9)
    assert float(rows[0]["niqe"]) == pytest.approx(calculate_niqe(sr, 4), abs=1e-9)
    assert (float(rows[0]["ma"]), float(rows[1]["ma"])) == (6.5, 5.25)
    assert float(rows[0]["pi"]) == pytest.approx(((10 - 6.5) + calculate_niqe(sr, 4)) / 2, abs=1e-9)
    bicubic = bicubic_image(PairedImageDataset("p", 4, str(photos / "gt"), None)[0]["LQ"], 4)
    assert float(rows[0]["niqe_bicubic"]) == pytest.approx(calculate_niqe(bicubic, 4), abs=1e-9)
    assert float(rows[0]["psnr_bicubic"]) == pytest.approx(calculate_psnr(bicubic, gt, 4), abs=1e-9)
    assert rows[0]["lpips"] == "nan" and rows[0]["lpips_bicubic"] == "nan"  # no weights: reported, not faked
    assert float(rows[2]["niqe"]) == pytest.approx((float(rows[0]["niqe"]) + float(rows[1]["niqe"])) / 2)
    assert float(rows[2]["pi"]) == pytest.approx((float(rows[0]["pi"]) + float(rows[1]["pi"])) / 2)


def test_a_set_without_gt_gets_the_no_reference_metrics(perceptual_run):
    rows = read_csv(perceptual_run / "small" / "metrics.csv")
    from esrgan.metrics import calculate_niqe
    from esrgan.utils.image import read_image, to_uint8

    assert list(rows[0]) == ["name", "seconds", "niqe", "niqe_bicubic"] and rows[0]["name"] == "small"
    sr = to_uint8(read_image(perceptual_run / "small" / "small.png"))
    assert sr.shape == (200, 200, 3) and float(rows[0]["niqe"]) == pytest.approx(calculate_niqe(sr, 4), abs=1e-9)


def test_the_summary_has_a_column_per_metric_and_says_what_is_missing(perceptual_run):
    rows = read_csv(perceptual_run / "summary.csv")
    assert list(rows[0]) == ["set", "images", "psnr", "ssim", "niqe", "lpips", "ma", "pi", "psnr_bicubic",
                             "ssim_bicubic", "niqe_bicubic", "lpips_bicubic", "seconds_per_image"]
    assert rows[1]["psnr"] == "" and rows[1]["pi"] == "" and float(rows[1]["niqe"]) > 0
    (log_file,) = perceptual_run.glob("test_perceptual_*.log")
    text = log_file.read_text(encoding="utf-8")
    table = text[text.index("Summary (PSNR/SSIM on Y, 4 border pixels cropped"):].splitlines()
    assert "NIQE on Y, lower is better" in table[0]
    assert table[1].split() == ["set", "images", "PSNR", "SSIM", "NIQE", "LPIPS", "Ma", "PI", "bic.PSNR", "bic.SSIM",
                                "bic.NIQE", "bic.LPIPS", "s/image"]
    assert table[2].split()[5] == "n/a" and table[3].split()[2:4] == ["-", "-"]
    reason = ("LPIPS (alex) needs torchvision's ImageNet weights" if importlib.util.find_spec("lpips")
              else "LPIPS needs the optional lpips package: pip install lpips")  # the weights, or the package
    assert f"LPIPS n/a: {reason}" in table[4]
    assert "small: no Ma scores (datasets.<key>.ma_scores), so the perceptual index" in text


def test_the_interpolation_sweep_reports_psnr_and_niqe_per_alpha(photos, tmp_path):
    sweep = run_test(perceptual_opts(photos, tmp_path, path={"interp_gan_model": str(photos / "gan.pth")},
                                     test={"interp_alphas": [0.0, 1.0]},
                                     datasets={"photos": {"dataroot_GT": str(photos / "gt"),
                                                          "metrics": ["psnr", "niqe"]}}))
    rows = [r for r in read_csv(sweep / "summary.csv") if r["set"] == "photos"]
    assert [float(r["alpha"]) for r in rows] == [0.0, 1.0]
    assert rows[0]["niqe"] != rows[1]["niqe"] and rows[0]["niqe_bicubic"] == rows[1]["niqe_bicubic"]
    assert float(rows[0]["psnr"]) > 0 and float(rows[1]["niqe"]) > 0


def test_ma_scores_must_cover_the_set(photos, tmp_path):
    (tmp_path / "ma.csv").write_text("name,ma\nchelsea,6\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^datasets\.photos\.ma_scores: .*ma.csv: no Ma score for 1 of the 2 "
                                         r"images of photos: coffee"):
        run_test(perceptual_opts(photos, tmp_path, datasets={"photos": {
            "dataroot_GT": str(photos / "gt"), "metrics": ["niqe"], "ma_scores": str(tmp_path / "ma.csv")}}))
    (tmp_path / "ma.csv").write_text("name,score\nchelsea,6\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^datasets\.photos\.ma_scores: .*ma.csv: a Ma-score file needs the "
                                         r"columns name and ma"):
        run_test(perceptual_opts(photos, tmp_path, datasets={"photos": {
            "dataroot_GT": str(photos / "gt"), "metrics": ["niqe"], "ma_scores": str(tmp_path / "ma.csv")}}))


@pytest.mark.parametrize(("entry", "message"), [
    ({"metrics": ["psnr", "niqee"]}, r"datasets.photos.metrics\[1\]: 'niqee' is not one of .* did you mean niqe"),
    ({"metrics": ["psnr"], "ma_scores": "ma.csv"}, "ma_scores: the perceptual index needs NIQE too; add niqe to "
                                                   "datasets.photos.metrics"),
    ({"metrics": ["niqe"], "ma_scores": "ma.csv", "sweep": True}, "Ma scores belong to one set of SR images, but "
                                                                  "path.interp_gan_model makes one per alpha"),
])
def test_metric_options_are_checked(photos, tmp_path, entry, message):
    sweep = {"path": {"interp_gan_model": str(photos / "gan.pth")}} if entry.pop("sweep", False) else {}
    with pytest.raises(options.OptionError, match=message):
        perceptual_opts(photos, tmp_path, datasets={"photos": {"dataroot_GT": str(photos / "gt"), **entry}}, **sweep)


def test_a_set_without_gt_and_only_full_reference_metrics_is_not_scored_and_says_so(photos, tmp_path):
    out = run_test(perceptual_opts(photos, tmp_path, datasets={"small": {"dataroot_LQ": str(photos / "lq")}}))
    assert list(read_csv(out / "small" / "metrics.csv")[0]) == ["name", "seconds"]
    (log_file,) = out.glob("test_perceptual_*.log")
    assert "small has no GT, and its metrics (psnr, ssim) all need one" in log_file.read_text(encoding="utf-8")
