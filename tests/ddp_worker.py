"""Run by tests/test_distributed.py under torchrun: a few ESRGAN steps on rank-specific data, each rank saving
its weights, so the test can compare the ranks."""

import sys
from pathlib import Path

import torch

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.engine.distributed import any_rank_flag, global_mean, init_distributed, shutdown
from esrgan.models.esrgan import ESRGANModel
from esrgan.options import GanPhaseOpt, PsnrPhaseOpt

GLOBAL_MEAN_DATA = [[1.0, 2.0], [4.0, 8.0]]  # one row per rank


def global_mean_gradient(world) -> torch.Tensor:
    """d/dtheta of a RaGAN-like loss mean(softplus(x - mean over all ranks of x)), x = theta * this rank's row,
    averaged over the ranks as DDP averages gradients."""
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = theta * torch.tensor(GLOBAL_MEAN_DATA[world.rank], dtype=torch.float64)
    torch.nn.functional.softplus(x - global_mean(x)).mean().backward()
    grad = theta.grad.clone()
    torch.distributed.all_reduce(grad)
    return grad / world.world_size


def main(out: Path) -> None:
    world = init_distributed(torch.device("cpu"))
    torch.manual_seed(world.rank)  # different initial weights: DDP must make them equal
    model = ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                        VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=2), GanPhaseOpt(niter=2),
                        torch.device("cpu"), ema_decay=0.9)
    model.wrap_distributed(None, global_mean, any_rank_flag)
    for step in range(1, 5):
        g = torch.Generator().manual_seed(100 * world.rank + step)
        gt = torch.rand(2, 3, 128, 128, generator=g)
        if step == 2 and world.rank == 1:
            gt[0, 0, 0, 0] = float("nan")  # a broken batch on one rank: every rank must skip that step
        model.feed_data({"LQ": torch.rand(2, 3, 32, 32, generator=g), "GT": gt})
        model.optimize_parameters(step)
    torch.save({"G": model.net_g.state_dict(), "G_ema": model.net_g_ema.state_dict(),
                "D": dict(model.net_d.named_parameters()),
                "skipped_G": model.health()["skipped_G"], "global_mean_grad": global_mean_gradient(world)},
               out / f"rank{world.rank}.pt")
    shutdown(world)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
