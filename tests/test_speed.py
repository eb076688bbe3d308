"""Speed settings: bf16 autocast, channels_last, torch.compile and fp16 scaling behave like the fp32 path."""

import subprocess
import sys

import pytest
import torch

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.models.esrgan import ESRGANModel, SRModel
from esrgan.options import REPO_ROOT, GanPhaseOpt, OptimOpt, PsnrPhaseOpt

CPU = torch.device("cpu")


def model(device=CPU, **speed) -> ESRGANModel:
    torch.manual_seed(0)
    return ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                       VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=1, optim_G=OptimOpt(lr=1e-3)),
                       GanPhaseOpt(niter=1), device, **speed)


def batch(device=CPU) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"LQ": torch.rand(2, 3, 32, 32, generator=g).to(device),
            "GT": torch.rand(2, 3, 128, 128, generator=g).to(device)}


def run_steps(m: ESRGANModel, steps: int = 2) -> None:
    for step in range(1, steps + 1):
        m.feed_data(batch(m.device))
        m.optimize_parameters(step)


def test_bf16_autocast_trains_both_phases_with_fp32_weights():
    m = model(precision="bf16")
    run_steps(m)
    assert m.fake.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in m.net_g.parameters())
    assert all(torch.isfinite(v) for k, v in m.log_dict.items() if isinstance(v, torch.Tensor))


def test_bf16_step_stays_close_to_the_fp32_step():
    plain, fast = model(), model(precision="bf16")
    run_steps(plain, 1)
    run_steps(fast, 1)
    for a, b in zip(plain.net_g.parameters(), fast.net_g.parameters(), strict=True):
        assert torch.allclose(a, b, atol=3e-3)


def same_losses_and_close_weights(plain: ESRGANModel, fast: ESRGANModel) -> None:
    """Both phases give the same losses; Adam turns float noise in near-zero gradients into steps of up to lr,
    so the weights are compared at that scale."""
    for step in (1, 2):
        for m in (plain, fast):
            m.feed_data(batch(m.device))
            m.optimize_parameters(step)
        for key, value in plain.log_dict.items():
            assert torch.allclose(torch.as_tensor(value), torch.as_tensor(fast.log_dict[key]), rtol=1e-4), key
    for a, b in zip(plain.net_g.parameters(), fast.net_g.parameters(), strict=True):
        assert torch.allclose(a, b, atol=2e-3)


def test_channels_last_gives_the_same_training_as_the_default_layout():
    plain, fast = model(), model(channels_last=True)
    assert fast.net_g.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    same_losses_and_close_weights(plain, fast)


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        SRModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), PsnrPhaseOpt(niter=1), CPU, precision="fp16")


def test_compiled_training_matches_eager():
    # The "aot_eager" backend traces G, D and VGG through dynamo and autograd like inductor does, without the
    # minutes of C++ code generation a CPU test run cannot afford.
    plain, fast = model(), model()
    fast.compile(backend="aot_eager")
    same_losses_and_close_weights(plain, fast)
    assert list(fast.net_g.state_dict()) == list(plain.net_g.state_dict())  # saved keys stay the seed's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 gradient scaling runs on CUDA")
def test_fp16_scales_gradients_per_network_and_saves_the_scalers():
    m = model(torch.device("cuda"), precision="fp16")
    run_steps(m)
    assert set(m.amp.scalers) == {"G", "D"}
    assert set(m.state_dict()["scalers"]) == {"G", "D"}


def test_the_fast_path_check_trains_both_runs_and_compares_validation_psnr_and_gan_losses(tmp_path):
    tiny = ["network_G.nf=8", "network_G.nb=1", "network_G.gc=4", "network_D.nf=4", "datasets.train.batch_size=2",
            "datasets.train.n_workers=0", "network_F.allow_random_weights=true"]
    args = [sys.executable, str(REPO_ROOT / "scripts" / "check_fast_path.py"), "-opt",
            str(REPO_ROOT / "options" / "train_demo.yml"), "--psnr-iters", "3", "--gan-iters", "2", "--print-freq",
            "1", "--workdir", str(tmp_path), "--fast", "speed.channels_last=true"]
    for item in tiny:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "| iteration | fp32 val PSNR | fast val PSNR | difference (dB) |" in out
    assert "PSNR phase, iteration 3: |difference|" in out and out.rstrip().count("PASS") == 1
    assert "| iteration | l_g_pix fp32 / fast | l_g_fea fp32 / fast | l_g_gan fp32 / fast |" in out
    losses = out[out.index("l_g_pix fp32 / fast"):].splitlines()
    assert [line.split("|")[1].strip() for line in losses[2:]] == ["4", "5"]  # the GAN-phase prints
    assert "| 3 |" in out and "| 5 |" in out[: out.index("PSNR phase, iteration")]  # validations
    for run in ("check_fp32", "check_fast"):
        (options_file,) = (tmp_path / run).glob("options_*.yml")
        assert ("channels_last: true" in options_file.read_text()) == (run == "check_fast")
