"""The README's DIV2K route: unzipped DIV2K folders -> prepare_div2k.py -> LMDBs -> train_ESRGAN.yml starts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from esrgan.data.lmdb_io import read_meta_info
from esrgan.options import REPO_ROOT


def test_prepared_div2k_lmdbs_train_with_the_paper_option_file(tmp_path):
    rng = np.random.default_rng(0)
    div2k = tmp_path / "DIV2K"
    for name in ("0001", "0002"):
        hr = rng.integers(0, 256, (500, 520, 3), dtype=np.uint8)
        (div2k / "DIV2K_train_HR").mkdir(parents=True, exist_ok=True)
        (div2k / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(div2k / "DIV2K_train_HR" / f"{name}.png"), hr)
        cv2.imwrite(str(div2k / "DIV2K_train_LR_bicubic" / "X4" / f"{name}x4.png"), hr[::4, ::4])
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "prepare_div2k.py"), "--div2k", str(div2k),
                    "--workers", "1"], check=True, capture_output=True, cwd=tmp_path)

    hr_meta = read_meta_info(div2k / "DIV2K800_sub.lmdb")
    lr_meta = read_meta_info(div2k / "DIV2K800_sub_bicLRx4.lmdb")
    # 500 x 520 with crop 480, step 240: rows [0, 20], columns [0, 40] -> 4 crops per image
    assert sorted(hr_meta) == sorted(lr_meta) == [f"{n}_s00{i}" for n in ("0001", "0002") for i in (1, 2, 3, 4)]
    assert set(hr_meta.values()) == {(480, 480, 3)} and set(lr_meta.values()) == {(120, 120, 3)}

    overrides = {"name": "div2k", "path.experiments_root": str(tmp_path / "runs"),
                 "datasets.train.dataroot_GT": str(div2k / "DIV2K800_sub.lmdb"),
                 "datasets.train.dataroot_LQ": str(div2k / "DIV2K800_sub_bicLRx4.lmdb"),
                 "datasets.train.batch_size": 2, "datasets.train.n_workers": 1, "datasets.val": "~",
                 "network_G.nf": 8, "network_G.nb": 1, "network_G.gc": 4, "network_D.nf": 4,
                 "network_F.allow_random_weights": "true", "train.psnr.niter": 1, "train.gan.niter": 1}
    args = [sys.executable, str(REPO_ROOT / "train.py"), "-opt", str(REPO_ROOT / "options" / "train_ESRGAN.yml")]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "div2k" / "models" / "2_G.pth").is_file()


def test_a_source_image_replaced_by_a_smaller_one_is_prepared_again_to_the_end(tmp_path):
    """Without DIV2K's LR folder: the LR crops are made by generate_lr.py. The crop the smaller image no longer
    has goes from the crops, the LR crops and both LMDBs, and the rerun finishes; so do the crops of an image
    deleted."""
    rng = np.random.default_rng(0)
    hr = tmp_path / "DIV2K" / "DIV2K_train_HR"
    hr.mkdir(parents=True)
    for name in ("0001", "0002"):
        cv2.imwrite(str(hr / f"{name}.png"), rng.integers(0, 256, (480, 720, 3), dtype=np.uint8))  # 2 crops each
    command = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_div2k.py"), "--div2k", str(tmp_path / "DIV2K"),
               "--workers", "1"]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    cv2.imwrite(str(hr / "0001.png"), rng.integers(0, 256, (480, 480, 3), dtype=np.uint8))  # 1 crop now
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = ["0001_s001", "0002_s001", "0002_s002"]
    for folder in ("DIV2K800_sub", "DIV2K800_sub_bicLRx4"):
        assert sorted(p.stem for p in (tmp_path / "DIV2K" / folder).glob("*.png")) == expected
        assert sorted(read_meta_info(tmp_path / "DIV2K" / f"{folder}.lmdb")) == expected
    (hr / "0002.png").unlink()  # a source image deleted: its crops go too
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in ("DIV2K800_sub", "DIV2K800_sub_bicLRx4"):
        assert sorted(p.stem for p in (tmp_path / "DIV2K" / folder).glob("*.png")) == ["0001_s001"]
        assert sorted(read_meta_info(tmp_path / "DIV2K" / f"{folder}.lmdb")) == ["0001_s001"]


def test_div2k_lr_images_added_after_a_first_run_keep_the_bicubic_lr_crops(tmp_path):
    rng = np.random.default_rng(0)
    div2k = tmp_path / "DIV2K"
    hr = rng.integers(0, 256, (480, 480, 3), dtype=np.uint8)
    (div2k / "DIV2K_train_HR").mkdir(parents=True)
    cv2.imwrite(str(div2k / "DIV2K_train_HR" / "0001.png"), hr)
    command = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_div2k.py"), "--div2k", str(div2k),
               "--workers", "1"]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    lr_crop = (div2k / "DIV2K800_sub_bicLRx4" / "0001_s001.png").read_bytes()
    (div2k / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)  # unzipped later
    cv2.imwrite(str(div2k / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png"), hr[::4, ::4])
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"{div2k / 'DIV2K800_sub'} was made before {div2k / 'DIV2K_train_LR_bicubic' / 'X4'} was there: its "
            "LR crops stay the MATLAB-compatible bicubic ones") in result.stdout
    assert (div2k / "DIV2K800_sub_bicLRx4" / "0001_s001.png").read_bytes() == lr_crop
    assert sorted(read_meta_info(div2k / "DIV2K800_sub_bicLRx4.lmdb")) == ["0001_s001"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the processes through /proc")
def test_ctrl_c_stops_every_process_with_one_line_and_a_rerun_finishes(tmp_path, find_processes):
    """As a terminal does, Ctrl-C goes to the whole process group: the step's worker processes must not be left
    behind (a step killed at once left them waiting for ever), and the run says how to continue."""
    rng = np.random.default_rng(0)
    hr = tmp_path / "DIV2K" / "DIV2K_train_HR"
    hr.mkdir(parents=True)
    for i in range(1, 17):
        cv2.imwrite(str(hr / f"{i:04d}.png"), rng.integers(0, 256, (720, 720, 3), dtype=np.uint8))
    command = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_div2k.py"), "--div2k", str(tmp_path / "DIV2K"),
               "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    crops = tmp_path / "DIV2K" / "DIV2K800_sub"
    deadline = time.time() + 60
    while not (crops.is_dir() and any(crops.glob("*.png"))):
        assert time.time() < deadline and proc.poll() is None, "the first step did not start"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == ("prepare_div2k.py: stopped by Ctrl-C; run this command again to continue: "
                                    "finished work is kept")
    assert "Traceback" not in err
    deadline = time.time() + 10
    while find_processes(group=proc.pid):
        assert time.time() < deadline, f"left behind: {find_processes(group=proc.pid)}"
        time.sleep(0.1)
    subprocess.run(command, check=True, capture_output=True)
    assert len(read_meta_info(tmp_path / "DIV2K" / "DIV2K800_sub.lmdb")) == 16 * 4
