"""The training sampler and loader: the seed fixes the data, whatever the workers; resumable; sharded."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from esrgan.data.loader import TrainSampler, build_train_loader, prefetch_to_device
from esrgan.data.paired import PairedImageDataset


def test_the_order_is_fixed_by_the_seed_and_differs_between_seeds():
    a = list(TrainSampler(10, seed=1))
    assert a == list(TrainSampler(10, seed=1))
    assert a != list(TrainSampler(10, seed=2))
    assert sorted(i for i, _ in a) == list(range(10))


def test_each_epoch_has_its_own_order():
    sampler = TrainSampler(10, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_enlarge_ratio_visits_every_image_that_many_times():
    indices = [i for i, _ in TrainSampler(5, seed=0, enlarge_ratio=3)]
    assert sorted(indices) == sorted(list(range(5)) * 3)


def test_an_enlarged_epoch_shuffles_the_copies_together_rather_than_repeating_one_order():
    """As BasicSR's EnlargedSampler: one permutation of all 5 x 3 visits, so an image may come again before another
    has come once (a repeated permutation of the 5 would never do that)."""
    firsts = [[i for i, _ in TrainSampler(5, seed=seed, enlarge_ratio=3)][:5] for seed in range(10)]
    assert any(len(set(first)) < 5 for first in firsts)


def test_ranks_get_disjoint_shares_of_the_same_permutation():
    whole = list(TrainSampler(8, seed=3))
    shares = [list(TrainSampler(8, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2]


def test_starting_within_an_epoch_continues_where_it_stopped():
    sampler = TrainSampler(10, seed=4)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=6)
    assert list(sampler) == full[6:] and len(sampler) == 4


def test_a_rank_starting_within_an_epoch_continues_with_its_own_share_where_it_stopped():
    """`start` counts this rank's samples: rank 1 of 2 resumed at its 3rd sample skips 3 of its own, not 3 of
    the whole permutation."""
    sampler = TrainSampler(10, seed=4, rank=1, world_size=2)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start=3)
    assert list(sampler) == full[3:] and len(sampler) == 2


def test_unshuffled_order_is_sequential():
    assert [i for i, _ in TrainSampler(4, seed=0, shuffle=False)] == [0, 1, 2, 3]


def make_dataset(root: Path) -> PairedImageDataset:
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        (root / "GT").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "GT" / f"im{i}.png"), img)
    return PairedImageDataset("t", 4, str(root / "GT"), None, gt_size=16, use_flip=True, use_rot=True)


def batches(loader) -> list[torch.Tensor]:
    return [b["LQ"] for b in loader]


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    ds = make_dataset(tmp_path)
    inline = batches(build_train_loader(ds, 2, 0, seed=5, shuffle=True, enlarge_ratio=2, pin_memory=False))
    workers = batches(build_train_loader(ds, 2, 2, seed=5, shuffle=True, enlarge_ratio=2, pin_memory=False))
    assert len(inline) == 6
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True))


def test_an_incomplete_last_batch_is_dropped_so_that_every_batch_has_one_shape(tmp_path):
    """6 images in batches of 4: one batch; the 2 images left over would make a batch of another shape, which
    captured steps (speed.cuda_graph) cannot take."""
    loader = build_train_loader(make_dataset(tmp_path), 4, 0, seed=5, shuffle=True, enlarge_ratio=1,
                                pin_memory=False)
    assert len(loader) == 1
    assert [b.shape[0] for b in batches(loader)] == [4]


def test_another_seed_gives_other_batches(tmp_path):
    ds = make_dataset(tmp_path)
    a = batches(build_train_loader(ds, 2, 0, seed=5, shuffle=True, enlarge_ratio=1, pin_memory=False))
    b = batches(build_train_loader(ds, 2, 0, seed=6, shuffle=True, enlarge_ratio=1, pin_memory=False))
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_prefetch_passes_batches_through_on_the_cpu():
    items = [{"LQ": torch.ones(1), "name": ["a"]}]
    assert list(prefetch_to_device(iter(items), torch.device("cpu"))) == items


def test_data_wait_counts_the_time_spent_waiting_for_batches():
    import time

    from esrgan.data.loader import DataWait

    def slow_batches():
        for k in range(3):
            time.sleep(0.05)
            yield {"k": k}

    wait = DataWait()
    seen = []
    for batch in wait.timed(slow_batches()):
        time.sleep(0.02)  # work on the batch is not waiting
        seen.append(batch["k"])
    assert seen == [0, 1, 2]
    assert 0.15 <= wait.seconds < 0.2


def test_an_epoch_too_large_to_draw_its_order_in_memory_is_refused_by_the_option():
    from esrgan.data.loader import MAX_EPOCH_SAMPLES

    TrainSampler(7, seed=1, enlarge_ratio=MAX_EPOCH_SAMPLES // 7)  # within: nothing is drawn before iterating
    with pytest.raises(ValueError, match=r"^datasets.train.dataset_enlarge_ratio: 100000000000 x 7 training images "
                                         r"is 700,000,000,002 samples per epoch \(padded to a multiple of the 3 "
                                         r"processes\), more than the 100,000,000 an epoch's order may hold in "
                                         r"memory; lower the ratio$"):
        TrainSampler(7, seed=1, enlarge_ratio=10**11, world_size=3)
