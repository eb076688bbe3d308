"""train.py then test.py on the bundled demo data, as a user runs them (tiny network, a few iterations)."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from esrgan.archs.rrdbnet import RRDBNet
from esrgan.metrics import calculate_psnr, calculate_ssim
from esrgan.options import REPO_ROOT
from esrgan.utils.image import read_image

TINY_G = ["network_G.nf=8", "network_G.nb=1", "network_G.gc=4"]
TRAIN_SETTINGS = [*TINY_G, "name=e2e", "network_D.nf=4", "train.psnr.niter=4", "train.gan.niter=2",
                  "datasets.train.batch_size=2", "datasets.train.n_workers=0", "train.val_freq=3",
                  "logger.save_freq=3", "logger.print_freq=2", "network_F.weights=imagenet",
                  "network_F.allow_random_weights=true", "speed.cuda_graph=true"]


def run(script: str, option_file: str, overrides: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a launcher from another working directory, as `python <repo>/train.py -opt ... --set ...`."""
    args = [sys.executable, str(REPO_ROOT / script), "-opt", str(REPO_ROOT / option_file)]
    for item in overrides:
        args += ["--set", item]
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = run("train.py", "options/train_demo.yml", [*TRAIN_SETTINGS, f"path.experiments_root={root}"],
                 cwd=tmp_path_factory.mktemp("elsewhere"))
    return root / "e2e", result.stdout + result.stderr


def test_training_writes_models_states_and_options(trained):
    run_dir, _ = trained
    models = {p.name for p in (run_dir / "models").iterdir()}
    # every save_freq (3), the PSNR phase's end (4) and the run's (6); D's file only in the GAN phase
    assert models == {"3_G.pth", "4_G.pth", "6_G.pth", "6_D.pth", "latest_G.pth", "best_G.pth"}
    assert {p.name for p in (run_dir / "training_state").iterdir()} == {"3.state", "4.state", "6.state", "latest"}
    assert (run_dir / "training_state" / "latest").read_text() == "6\n"
    assert not list(run_dir.rglob(".*.tmp*"))  # atomic_output's temporaries
    (options_file,) = run_dir.glob("options_*.yml")
    resolved = yaml.safe_load(options_file.read_text())
    assert resolved["network_F"]["weights"] == "random"  # the fallback is recorded, not hidden


def test_saved_generator_is_a_raw_state_dict_with_the_seed_keys(trained):
    run_dir, _ = trained
    state = torch.load(run_dir / "models" / "latest_G.pth", weights_only=True)
    net = RRDBNet(3, 3, nf=8, nb=1, gc=4)
    assert list(state) == list(net.state_dict())
    net.load_state_dict(state, strict=True)
    assert torch.equal(state["conv_last.weight"],
                       torch.load(run_dir / "models" / "6_G.pth", weights_only=True)["conv_last.weight"])


def test_training_logs_losses_phases_and_validation_against_bicubic(trained):
    run_dir, output = trained
    assert "RANDOMLY initialised VGG19" in output
    assert "GAN phase starts" in output
    assert "speed.cuda_graph: training eagerly, CUDA graphs need a CUDA device, training runs on cpu" in output
    assert "bicubic baseline: PSNR" in output
    assert "Validation demo_val at iter 6: PSNR" in output
    assert re.search(r"iter 2 \(psnr\) [0-9.]+s/it, data wait [0-9.]+% \| l_g_pix", output)
    (log_file,) = run_dir.glob("train_e2e_*.log")
    assert "l_d_real" in log_file.read_text()
    assert {p.name for p in (run_dir / "val_images").iterdir()} == {"brick", "grass", "gravel"}
    assert (run_dir / "val_images" / "brick" / "brick_6.png").is_file()


def test_tensorboard_holds_losses_learning_rates_metrics_and_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = trained
    events = EventAccumulator(str(run_dir / "tb_logger"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {f"train/{k}" for k in ("l_g_pix", "l_g_fea", "l_g_gan", "l_d_real", "l_d_fake", "D_real",
                                       "D_fake", "lr_G", "lr_D")}
    assert expected | {"val/psnr", "val/ssim", "val/psnr_bicubic", "train/data_wait_fraction"} <= scalars
    assert all(0 <= e.value <= 1 for e in events.Scalars("train/data_wait_fraction"))
    assert [e.step for e in events.Scalars("val/psnr")] == [3, 4, 6]  # every val_freq, and each phase's end
    images = events.Tags()["images"]
    assert len(images) == 3
    image = events.Images(images[0])[-1]
    assert (image.width, image.height) == (2 * 192, 192)  # SR next to GT


def test_validation_scores_the_images_it_writes_on_y_with_the_scale_as_border(trained):
    """Each validation's PSNR and SSIM are the means over the set of the written SR images against GT, on the Y
    channel with `scale` (4) border pixels cropped, the SR papers' convention."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = trained
    events = EventAccumulator(str(run_dir / "tb_logger"), size_guidance={"scalars": 0}).Reload()
    gt = {name: read_image(REPO_ROOT / "datasets" / "demo" / "val" / f"{name}.png")
          for name in ("brick", "grass", "gravel")}
    for metric, score in (("psnr", calculate_psnr), ("ssim", calculate_ssim)):
        logged = {e.step: e.value for e in events.Scalars(f"val/{metric}")}
        for step in (3, 4, 6):
            sr = {name: read_image(run_dir / "val_images" / name / f"{name}_{step}.png") for name in gt}
            assert logged[step] == pytest.approx(np.mean([score(sr[n], gt[n], 4, test_y_channel=True) for n in gt]),
                                                 abs=1e-5)
            for border, y in ((0, True), (4, False)):
                assert logged[step] != pytest.approx(np.mean([score(sr[n], gt[n], border, test_y_channel=y)
                                                              for n in gt]), abs=1e-4)


def test_test_script_writes_images_and_metrics_next_to_bicubic(trained, tmp_path):
    run_dir, _ = trained
    results = tmp_path / "results"
    output = run("test.py", "options/test_demo.yml",
                 [*TINY_G, f"path.pretrain_model_G={run_dir / 'models' / 'latest_G.pth'}",
                  f"path.results_root={results}"], cwd=tmp_path)
    set_dir = results / "demo_ESRGAN_x4" / "demo_val"
    for name in ("brick", "grass", "gravel"):
        assert cv2.imread(str(set_dir / f"{name}.png")).shape == (192, 192, 3)
    rows = list(csv.DictReader((set_dir / "metrics.csv").read_text().splitlines()))
    assert [r["name"] for r in rows] == ["brick", "grass", "gravel", "mean"]
    for row in rows[:3]:  # each row is the Y-channel metric of the written image, 4-pixel border cropped
        sr = read_image(set_dir / f"{row['name']}.png")
        gt = read_image(REPO_ROOT / "datasets" / "demo" / "val" / f"{row['name']}.png")
        assert float(row["psnr"]) == pytest.approx(calculate_psnr(sr, gt, 4), abs=1e-6)
        assert float(row["ssim"]) == pytest.approx(calculate_ssim(sr, gt, 4), abs=1e-6)
        assert 15 < float(row["psnr_bicubic"]) < 40
    mean = sum(float(r["psnr"]) for r in rows[:3]) / 3
    assert float(rows[3]["psnr"]) == pytest.approx(mean)
    assert "bicubic PSNR" in output.stdout + output.stderr


def test_resuming_continues_from_the_saved_iteration_in_the_same_folder(trained, tmp_path):
    run_dir, _ = trained
    root = run_dir.parent
    result = run("train.py", "options/train_demo.yml",
                 [*TRAIN_SETTINGS, f"path.experiments_root={root}", "train.gan.niter=4",
                  f"path.resume_state={run_dir / 'training_state' / '6.state'}"], cwd=tmp_path)
    assert "Resumed from" in result.stderr and "at iteration 6 (gan phase)" in result.stderr
    assert (run_dir / "training_state" / "8.state").is_file()
    assert not list(root.glob("e2e_archived_*"))


def test_a_new_run_archives_an_existing_folder_of_the_same_name(tmp_path):
    (tmp_path / "e2e" / "models").mkdir(parents=True)
    (tmp_path / "e2e" / "models" / "keep.pth").write_bytes(b"x")
    run("train.py", "options/train_demo.yml",
        [*TRAIN_SETTINGS, f"path.experiments_root={tmp_path}", "model=sr", "train.gan.niter=0",
         "train.psnr.niter=1", "datasets.val=~"], cwd=tmp_path)
    (archived,) = tmp_path.glob("e2e_archived_*")
    assert (archived / "models" / "keep.pth").read_bytes() == b"x"
    assert (tmp_path / "e2e" / "models" / "1_G.pth").is_file()


def test_option_errors_end_with_a_message_not_a_traceback(tmp_path):
    args = [sys.executable, str(REPO_ROOT / "train.py"), "-opt", str(REPO_ROOT / "options/train_demo.yml"),
            "--set", "train.pixel_weigth=1"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "did you mean train.gan.pixel_weight" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_set_flag_takes_several_overrides(capsys):
    from esrgan.cli import train_main

    assert train_main(["-opt", str(REPO_ROOT / "options/train_demo.yml"), "--set", "train.pixel_weigth=1",
                       "logger.print_frq=2", "--set", "name=x"]) == 2
    err = capsys.readouterr().err
    assert "2 unknown options:" in err and "unknown option logger.print_frq: did you mean logger.print_freq? " \
                                          "(given with --set)" in err


@pytest.mark.parametrize("flag", [["--launcher", "pytorch"], ["--local-rank=1"], ["--local_rank", "0"]])
def test_the_launch_flags_of_basicsr_and_torch_distributed_launch_point_to_torchrun(capsys, flag):
    from esrgan.cli import train_main

    with pytest.raises(SystemExit) as exit_info:
        train_main(["-opt", str(REPO_ROOT / "options/train_demo.yml"), *flag])
    assert exit_info.value.code == 2
    assert "`torchrun --nproc_per_node=N train.py ...` for several" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_network_list_the_keys(tmp_path):
    torch.save(RRDBNet(3, 3, nf=8, nb=2, gc=4).state_dict(), tmp_path / "g.pth")
    args = [sys.executable, str(REPO_ROOT / "test.py"), "-opt", str(REPO_ROOT / "options/test_demo.yml")]
    for item in [*TINY_G, f"path.pretrain_model_G={tmp_path / 'g.pth'}", f"path.results_root={tmp_path}"]:
        args += ["--set", item]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unexpected keys: RRDB_trunk.1.RDB1.conv1.weight" in result.stderr


def test_a_test_run_that_fails_to_start_leaves_the_earlier_results_in_place(tmp_path):
    earlier = tmp_path / "results" / "demo_ESRGAN_x4"
    earlier.mkdir(parents=True)
    (earlier / "summary.csv").write_text("set,psnr\n")
    (tmp_path / "g.pth").write_text("not weights")
    args = [sys.executable, str(REPO_ROOT / "test.py"), "-opt", str(REPO_ROOT / "options/test_demo.yml"),
            "--set", f"path.pretrain_model_G={tmp_path / 'g.pth'}",
            "--set", f"path.results_root={tmp_path / 'results'}"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "g.pth: it is not a torch.save" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["demo_ESRGAN_x4"]
    assert sorted(p.name for p in earlier.iterdir()) == ["summary.csv"]


def test_validation_computes_niqe_every_kth_time_and_logs_it_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = tmp_path / "val"
    val.mkdir()
    # 200x200: four 96x96 NIQE blocks once 4 border pixels are cropped.
    cv2.imwrite(str(val / "chelsea.png"), cv2.imread(str(REPO_ROOT / "datasets/demo/train/chelsea.png"))[:200, :200])
    result = run("train.py", "options/train_demo.yml",
                 [*TRAIN_SETTINGS, f"path.experiments_root={tmp_path}", "model=sr", "train.gan.niter=0",
                  "train.psnr.niter=3", "train.val_freq=1", f"datasets.val.dataroot_GT={val}",
                  "train.val_metrics=[psnr,ssim,niqe]", "train.val_niqe_every=2"], cwd=tmp_path)
    assert "bicubic baseline: PSNR" in result.stderr and ", NIQE " in result.stderr
    events = EventAccumulator(str(tmp_path / "e2e" / "tb_logger"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("val/psnr")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("val/niqe")] == [2, 3]  # every 2nd validation, and the last
    bicubic = {e.value for e in events.Scalars("val/niqe_bicubic")}
    assert len(bicubic) == 1 and 0 < bicubic.pop() < 30


def test_tiled_validation_uses_the_tile_and_overlap_options(tmp_path):
    from esrgan.data.paired import PairedImageDataset
    from esrgan.engine.inference import super_resolve
    from esrgan.utils.image import tensor2img, to_uint8

    run("train.py", "options/train_demo.yml",
        [*TRAIN_SETTINGS, f"path.experiments_root={tmp_path}", "model=sr", "train.gan.niter=0", "train.psnr.niter=1",
         "train.val_freq=1", "train.val_tile=16", "train.val_tile_overlap=3"], cwd=tmp_path)
    net = RRDBNet(3, 3, nf=8, nb=1, gc=4).eval()
    net.load_state_dict(torch.load(tmp_path / "e2e" / "models" / "1_G.pth", weights_only=True))
    lq = PairedImageDataset("val", 4, str(REPO_ROOT / "datasets/demo/val"), None)[0]["LQ"][None]  # brick, 48x48
    written = to_uint8(read_image(tmp_path / "e2e" / "val_images" / "brick" / "brick_1.png"))
    tiled = {overlap: tensor2img(super_resolve(net, lq, 4, tile=16, tile_overlap=overlap)) for overlap in (3, 16)}
    assert np.array_equal(written, tiled[3])
    assert not np.array_equal(tiled[3], tiled[16])  # 3 LR pixels of context leave seams: not the default was used
