"""Specification of LPIPS loading, the perceptual index, the Evaluator and scripts/evaluate.py.

LPIPS runs on randomly initialised backbones written to a temporary torch cache: nothing is downloaded, and the
comparison with the lpips package's own loading path shows that the weights land where the package puts them.
"""

import csv
import math
import runpy
import sys

import numpy as np
import pytest
import torch
import torchvision

from esrgan.engine.evaluate import Evaluator, mean_scores
from esrgan.metrics import calculate_niqe, calculate_psnr, calculate_ssim, perceptual_index, read_ma_scores
from esrgan.options import REPO_ROOT
from esrgan.utils.image import read_image, to_uint8, write_image

try:
    import lpips
except ImportError:  # the LPIPS tests skip; the others do not need the package
    lpips = None
needs_lpips = pytest.mark.skipif(lpips is None, reason="needs the optional lpips package (requirements-test.txt)")

from esrgan.metrics.lpips import MetricUnavailableError, backbone_cache_file, calculate_lpips, load_lpips  # noqa: E402

DEMO = REPO_ROOT / "datasets" / "demo"


def demo(name: str) -> np.ndarray:
    return to_uint8(read_image(DEMO / f"{name}.png"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch cache of our own."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def cache_random_backbone(net: str, features_only: bool = False) -> dict:
    torch.manual_seed(0)
    model = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}[net](weights=None)
    state = model.state_dict()
    if features_only:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    torch.save(state, backbone_cache_file(net))
    return state


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- LPIPS
@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")
@needs_lpips
def test_lpips_equals_the_packages_own_loading_path(hub):
    cache_random_backbone("squeeze")
    ours = load_lpips("squeeze")
    # The package's default path: torchvision finds the same file in the cache (a cached file is not re-downloaded).
    theirs = lpips.LPIPS(net="squeeze", verbose=False).eval()
    a, b = demo("val/brick")[:64, :64], demo("val/grass")[:64, :64]
    with torch.no_grad():
        expected = theirs(torch.from_numpy(a.transpose(2, 0, 1)[None] / 127.5 - 1).float(),
                          torch.from_numpy(b.transpose(2, 0, 1)[None] / 127.5 - 1).float()).item()
    assert calculate_lpips(ours, a, b, crop_border=0) == pytest.approx(expected, rel=1e-5)
    assert calculate_lpips(ours, a / 255, b / 255, crop_border=0) == pytest.approx(expected, rel=1e-5)  # float input
    assert expected > 0


@needs_lpips
def test_lpips_loads_every_backbone_weight_and_the_shipped_linear_layers(hub):
    state = cache_random_backbone("alex", features_only=True)
    model = load_lpips("alex")
    for slice_name, block in model.net.named_children():
        for index, layer in block.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                assert torch.equal(layer.weight, state[f"features.{index}.weight"]), (slice_name, index)
    shipped = torch.load(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", map_location="cpu", weights_only=True)
    assert torch.equal(model.lin0.model[1].weight, shipped["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


@needs_lpips
def test_lpips_is_zero_for_identical_images_and_grows_with_the_distortion(hub):
    cache_random_backbone("alex", features_only=True)
    model = load_lpips("alex")
    img = demo("train/chelsea")[:96, :128]
    distances = [calculate_lpips(model, img, noisy(img, s), crop_border=4) for s in (0, 5, 30)]
    assert distances[0] == 0 and 0 < distances[1] < distances[2]


@needs_lpips
def test_a_weights_path_is_used_instead_of_the_cache(hub, tmp_path):
    cache_random_backbone("alex", features_only=True)
    backbone_cache_file("alex").rename(tmp_path / "mine.pth")
    with pytest.raises(MetricUnavailableError, match=r"alexnet-owt-7be5be79.pth \(the torch cache\)"):
        load_lpips("alex")
    assert load_lpips("alex", str(tmp_path / "mine.pth")) is not None


@needs_lpips
def test_missing_or_unfit_weights_make_lpips_unavailable_with_the_reason(hub, tmp_path):
    with pytest.raises(MetricUnavailableError, match=r"not found at .*nowhere\.pth \(the file given\); copy .* or "
                       r"name a local copy \(metric_options\.lpips_weights in an option file, --lpips-weights"):
        load_lpips("alex", str(tmp_path / "nowhere.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(MetricUnavailableError, match="not a torchvision state dict of the LPIPS backbone"):
        load_lpips("alex", str(tmp_path / "wrong.pth"))


def test_without_the_package_lpips_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(MetricUnavailableError, match="pip install lpips"):
        load_lpips("alex")


# --------------------------------------------------------------------------------------- the evaluator
@needs_lpips
def test_the_evaluator_computes_its_metrics_with_one_crop(hub):
    cache_random_backbone("alex", features_only=True)
    gt = demo("train/chelsea")
    sr = noisy(gt, 8)
    scores = Evaluator(["psnr", "niqe", "lpips"], crop_border=4).score(sr, gt, "chelsea")
    assert list(scores) == ["psnr", "niqe", "lpips"]
    assert scores["psnr"] == calculate_psnr(sr, gt, 4) and scores["niqe"] == calculate_niqe(sr, 4)
    assert scores["lpips"] == calculate_lpips(load_lpips("alex"), sr, gt, 4)


def test_the_evaluator_crops_the_border_for_psnr_and_ssim_alike():
    gt = demo("val/brick")
    sr = 255 - gt  # wrong everywhere but inside the 4-pixel border
    sr[4:-4, 4:-4] = gt[4:-4, 4:-4]
    scores = Evaluator(["psnr", "ssim"], crop_border=4).score(sr, gt)
    assert scores["psnr"] == math.inf and scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    uncropped = Evaluator(["psnr", "ssim"], crop_border=0).score(sr, gt)
    assert uncropped == {"psnr": calculate_psnr(sr, gt, 0), "ssim": calculate_ssim(sr, gt, 0)}
    assert uncropped["psnr"] < 30 and uncropped["ssim"] < 0.99


def test_without_gt_only_niqe_is_computed_and_skip_leaves_metrics_out():
    img = demo("train/chelsea")
    evaluator = Evaluator(["psnr", "ssim", "niqe"], crop_border=4, niqe_channel="gray")
    assert evaluator.score(img, None) == {"niqe": calculate_niqe(img, 4, "gray")}
    assert list(evaluator.score(img, img, skip=("niqe",))) == ["psnr", "ssim"]


@needs_lpips
def test_unavailable_lpips_is_reported_as_nan_with_its_reason(hub, package_log):
    evaluator = Evaluator(["psnr", "lpips"], crop_border=0)
    assert "alexnet-owt-7be5be79.pth" in evaluator.unavailable["lpips"]
    assert "LPIPS is unavailable" in package_log.text
    img = demo("val/brick")
    scores = evaluator.score(img, img)
    assert scores["psnr"] == math.inf and math.isnan(scores["lpips"])


def test_an_image_too_small_for_niqe_gets_nan_and_one_warning_per_set(package_log):
    evaluator = Evaluator(["niqe"], crop_border=4)
    small = demo("val/brick")  # 192x192: 184x184 after cropping, one 96x96 block
    assert math.isnan(evaluator.score(small, None, "brick (bicubic)", group=None)["niqe"])  # a baseline: quiet
    for name, group in [("brick", "val"), ("brick again", "val"), ("brick once more", "val"), ("other", "set14"),
                        ("loose", "")]:
        assert math.isnan(evaluator.score(small, None, name, group=group)["niqe"])
    warnings = [r.getMessage() for r in package_log.records if "is n/a" in r.getMessage()]
    reason = "NIQE needs at least two 96x96 blocks to fit a Gaussian; the 184x184 image (after cropping) holds 1"
    assert sorted(set(warnings)) == [
        f"brick: NIQE is n/a: {reason} (further images of val too small for it are not reported)",
        f"loose: NIQE is n/a: {reason} (further images too small for it are not reported)",
        f"other: NIQE is n/a: {reason} (further images of set14 too small for it are not reported)"]


def test_means_propagate_a_missing_value():
    rows = [{"psnr": 20.0, "niqe": 5.0}, {"psnr": 22.0, "niqe": math.nan}]
    means = mean_scores(rows, ["psnr", "niqe", "lpips"])
    assert means["psnr"] == 21.0 and math.isnan(means["niqe"]) and "lpips" not in means


# --------------------------------------------------------------------------------- the perceptual index
def test_the_perceptual_index_is_the_pirm_formula():
    # ESRGAN's Set14 baboon: PI 1.98. With NIQE 2.0 that needs Ma 10 - (2 * 1.98 - 2.0) = 8.04.
    assert perceptual_index(ma=8.04, niqe=2.0) == pytest.approx(1.98)
    assert perceptual_index(ma=10.0, niqe=0.0) == 0.0


def test_ma_scores_are_read_by_image_name(tmp_path):
    path = tmp_path / "ma.csv"
    path.write_text("Name,MA,NIQE\nbaboon.png,8.25,3.1\ncomic,7.5,\n", encoding="utf-8")
    assert read_ma_scores(path) == {"baboon": 8.25, "comic": 7.5}


def test_ma_score_names_keep_dots_that_are_not_an_image_extension(tmp_path):
    (tmp_path / "ma.csv").write_text("name,ma\nimg.001,7.5\nimg.002.png,6\nbaboon.PNG,8\n", encoding="utf-8")
    assert read_ma_scores(tmp_path / "ma.csv") == {"img.001": 7.5, "img.002": 6.0, "baboon": 8.0}


@pytest.mark.parametrize(("text", "message"), [("name,score\na,1\n", "needs the columns name and ma"),
                                               ("name,ma\na,x\n", r"line 2: Ma score 'x' of 'a' is not a number"),
                                               ("name,ma\na,1\na.png,2\n", "line 3: 'a' appears twice")])
def test_bad_ma_files_are_named(tmp_path, text, message):
    (tmp_path / "ma.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_ma_scores(tmp_path / "ma.csv")


def test_a_ma_file_that_is_not_utf8_is_named():
    path = REPO_ROOT / "datasets" / "demo" / "val" / "brick.png"  # binary: a PNG starts with byte 0x89
    with pytest.raises(ValueError, match=r"^.*brick\.png: not UTF-8 text \(invalid start byte at byte 0\); save the "
                                         r"Ma-score file as UTF-8 CSV$"):
        read_ma_scores(path)


# --------------------------------------------------------------------------------- scripts/evaluate.py
def evaluate(*args: str) -> int:
    return runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"))["main"](list(args))


@pytest.fixture
def folders(tmp_path):
    """GT: two demo photos; SR: the same with noise, named with a tool's suffix."""
    for name in ("chelsea", "coffee"):
        img = demo(f"train/{name}")
        write_image(tmp_path / "gt" / f"{name}.png", img)
        write_image(tmp_path / "sr" / f"{name}_x4_SR.png", noisy(img, 6))
    return tmp_path


def read_rows(path) -> list[dict]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def test_evaluate_scores_matching_files_and_writes_a_csv(folders, capsys):
    (folders / "ma.csv").write_text("name,ma\nchelsea,8\ncoffee,7\n", encoding="utf-8")
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--metrics",
                    "psnr,niqe", "--ma-scores", str(folders / "ma.csv"), "--csv", str(folders / "out.csv")) == 0
    rows = read_rows(folders / "out.csv")
    assert [r["name"] for r in rows] == ["chelsea", "coffee", "mean"] and list(rows[0]) == ["name", "psnr", "niqe",
                                                                                           "ma", "pi"]
    sr = to_uint8(read_image(folders / "sr" / "chelsea_x4_SR.png"))
    gt = demo("train/chelsea")
    assert float(rows[0]["psnr"]) == pytest.approx(calculate_psnr(sr, gt, 4))
    assert float(rows[0]["niqe"]) == pytest.approx(calculate_niqe(sr, 4))
    assert float(rows[0]["pi"]) == pytest.approx(((10 - 8) + calculate_niqe(sr, 4)) / 2)
    assert float(rows[2]["niqe"]) == pytest.approx((float(rows[0]["niqe"]) + float(rows[1]["niqe"])) / 2)
    assert "chelsea" in capsys.readouterr().out


def test_evaluate_without_gt_scores_niqe_alone(folders, capsys):
    assert evaluate("--sr", str(folders / "sr"), "--crop", "0", "--csv", str(folders / "niqe.csv")) == 0
    rows = read_rows(folders / "niqe.csv")
    assert list(rows[0]) == ["name", "niqe"] and rows[0]["name"] == "chelsea_x4_SR"
    assert float(rows[0]["niqe"]) == pytest.approx(
        calculate_niqe(to_uint8(read_image(folders / "sr" / "chelsea_x4_SR.png")), 0))


def test_evaluate_names_unmatched_files(folders, capsys):
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr")) == 2
    err = capsys.readouterr().err
    assert "2 GT images have no SR image (chelsea, coffee); 2 SR images have no GT image (chelsea_x4_SR" in err
    assert "use --suffix" in err


def test_evaluate_names_images_of_different_sizes(folders, capsys):
    write_image(folders / "sr" / "coffee_x4_SR.png", demo("train/coffee")[:-4])  # 4 rows: more than a mod-crop
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR") == 2
    assert (f"coffee_x4_SR.png is 600x396 but {folders / 'gt' / 'coffee.png'} is 600x400: SR and GT images must have "
            "the same size") in capsys.readouterr().err


@pytest.mark.parametrize("cut", [(1, 0), (3, 3)])
def test_evaluate_refuses_an_sr_smaller_than_a_gt_that_is_already_a_multiple_of_the_scale(folders, capsys, cut):
    sr = to_uint8(read_image(folders / "sr" / "coffee_x4_SR.png"))  # 400x600, like the GT
    write_image(folders / "sr" / "coffee_x4_SR.png", sr[: sr.shape[0] - cut[0], : sr.shape[1] - cut[1]])
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR") == 2
    assert f"coffee_x4_SR.png is {600 - cut[1]}x{400 - cut[0]} but" in capsys.readouterr().err


def test_evaluate_cuts_a_gt_that_is_not_a_multiple_of_the_scale_as_test_py_does(folders):
    gt = demo("train/coffee")
    sr = to_uint8(read_image(folders / "sr" / "coffee_x4_SR.png"))
    write_image(folders / "gt" / "coffee.png", np.pad(gt, ((0, 3), (0, 2), (0, 0)), mode="reflect"))  # 403x602
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--metrics",
                    "psnr", "--csv", str(folders / "out.csv")) == 0
    assert float(read_rows(folders / "out.csv")[1]["psnr"]) == pytest.approx(calculate_psnr(sr, gt, 4))


def test_evaluate_refuses_full_reference_metrics_without_gt(folders, capsys):
    with pytest.raises(SystemExit):
        evaluate("--sr", str(folders / "sr"), "--metrics", "psnr")
    assert "needs --gt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate("--sr", str(folders / "sr"), "--ma-scores", str(folders / "none.csv"))
    assert f"--ma-scores {folders / 'none.csv'}: no such file" in capsys.readouterr().err


def test_evaluate_refuses_an_empty_metric_list_and_a_crop_that_leaves_nothing(folders, capsys):
    with pytest.raises(SystemExit):
        evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--metrics", " , ")
    assert "--metrics: name at least one of psnr, ssim, niqe, lpips" in capsys.readouterr().err
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--crop",
                    "200") == 2
    assert (f"error: --crop 200 removes the whole of {folders / 'sr' / 'chelsea_x4_SR.png'} (448x300); "
            "crop less") in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_evaluate_needs_the_device_only_for_lpips(folders, capsys):
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--metrics",
                    "psnr", "--device", "cuda") == 0
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--metrics",
                    "lpips", "--device", "cuda") == 2
    assert ("error: --device: 'cuda' was asked for but CUDA is not available; use auto or cpu"
            in capsys.readouterr().err)


def test_evaluate_reads_gray_16_bit_and_rgba_files_as_test_py_does(tmp_path):
    import cv2

    read_for_scoring = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"))["read_for_scoring"]
    rgb = demo("train/chelsea")
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[:, :, 1])
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 9, np.uint8)]))
    # Gray is replicated to RGB, as the datasets of test.py and validation do, so both tools give one number.
    np.testing.assert_array_equal(read_for_scoring(tmp_path / "gray.png"), np.repeat(rgb[:, :, 1:2], 3, axis=2))
    np.testing.assert_array_equal(read_for_scoring(tmp_path / "deep.png"), rgb)
    np.testing.assert_array_equal(read_for_scoring(tmp_path / "rgba.png"), rgb)


def test_ma_scores_may_be_keyed_by_the_sr_file_names(folders):
    (folders / "ma.csv").write_text("name,ma\nchelsea_x4_SR.png,8\ncoffee_x4_SR,7\n", encoding="utf-8")
    assert evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--metrics",
                    "niqe", "--ma-scores", str(folders / "ma.csv"), "--csv", str(folders / "out.csv")) == 0
    assert [float(r["ma"]) for r in read_rows(folders / "out.csv")] == [8, 7, 7.5]


def test_evaluate_refuses_a_csv_path_that_is_a_folder_before_scoring(folders, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate("--gt", str(folders / "gt"), "--sr", str(folders / "sr"), "--suffix", "_x4_SR", "--csv",
                 str(folders))
    assert info.value.code == 2
    assert f"--csv {folders} is a folder; give the CSV file to write" in capsys.readouterr().err


def test_ssim_of_an_image_smaller_than_its_window_after_cropping_is_n_a_with_a_warning(package_log):
    from esrgan.engine.evaluate import Evaluator

    img = np.full((18, 18, 3), 128, np.uint8)  # 10x10 after cropping 4 pixels at each border
    scores = Evaluator(["psnr", "ssim"], 4).score(img, img.copy(), "small")
    assert scores["psnr"] == float("inf") and math.isnan(scores["ssim"])
    assert "small: SSIM is n/a: SSIM needs images of at least 11x11 pixels after cropping" in package_log.text


def test_the_mean_row_is_named_apart_from_an_image_named_mean():
    from esrgan.engine.evaluate import mean_row

    rows = [{"name": "a", "psnr": 20.0}, {"name": "b", "psnr": 30.0}]
    assert mean_row(rows) == {"name": "mean", "psnr": 25.0}
    assert mean_row([*rows, {"name": "mean", "psnr": 40.0}]) == {"name": "(mean)", "psnr": 30.0}
