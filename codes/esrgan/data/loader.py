"""Data loaders: a seeded, resumable training sampler, worker seeding, and batches prefetched to the GPU.

The training order is a function of (seed, epoch, rank) only, and every sample carries its own augmentation
seed derived from (seed, epoch, position): the same `manual_seed` gives the same batches whatever the number
of workers, and a run can be resumed at an exact position within an epoch.
"""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

MAX_EPOCH_SAMPLES = 10**8


class TrainSampler(Sampler[tuple[int, int]]):
    """Shuffled (or ordered) indices, repeated `enlarge_ratio` times per epoch, sharded across `world_size`
    processes, each paired with a per-sample seed.

    `enlarge_ratio` makes one epoch cover the dataset several times, so small datasets do not restart the
    loader's workers every few iterations.
    """

    def __init__(self, dataset_len: int, seed: int, shuffle: bool = True, enlarge_ratio: int = 1, rank: int = 0,
                 world_size: int = 1) -> None:
        self.dataset_len = dataset_len
        self.seed = seed
        self.shuffle = shuffle
        self.enlarge_ratio = enlarge_ratio
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0  # position within the epoch to start from (for resuming)
        self.per_rank = math.ceil(dataset_len * enlarge_ratio / world_size)
        if self.per_rank * world_size > MAX_EPOCH_SAMPLES:  # the epoch's order is drawn whole: 16 bytes a sample
            raise ValueError(f"datasets.train.dataset_enlarge_ratio: {enlarge_ratio} x {dataset_len} training images "
                             f"is {self.per_rank * world_size:,} samples per epoch (padded to a multiple of the "
                             f"{world_size} processes), more than the {MAX_EPOCH_SAMPLES:,} an epoch's order may "
                             "hold in memory; lower the ratio")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        total = self.per_rank * self.world_size
        if self.shuffle:
            order = torch.randperm(total, generator=g) % self.dataset_len
        else:
            order = torch.arange(total) % self.dataset_len
        sample_seeds = torch.randint(0, 2**62, (total,), generator=g)
        # Every rank draws the same permutation and takes its own strided share.
        for position in range(self.rank + self.start * self.world_size, total, self.world_size):
            yield int(order[position]), int(sample_seeds[position])


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (different tuples give unrelated seeds)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and `random` in a worker from the seed torch derived for it (itself from the loader's seed).

    Workers also ignore SIGINT/SIGTERM: schedulers signal the whole process group, and the training process
    must be the one that stops, saves and shuts its workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def stop_workers(loader: DataLoader) -> None:
    """Shut a loader's persistent workers down now. They ignore SIGTERM (seed_worker), so leaving them to
    Python's exit, which terminates child processes and then waits for them, would hang a run that ends with an
    exception."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def build_train_loader(dataset: Dataset, batch_size: int, n_workers: int, seed: int, shuffle: bool,
                       enlarge_ratio: int, pin_memory: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
    sampler = TrainSampler(len(dataset), seed, shuffle, enlarge_ratio, rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=n_workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=n_workers > 0, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(_mix(seed, rank)),
                      prefetch_factor=4 if n_workers > 0 else None)


def prefetch_to_device(batches: Iterator[dict[str, Any]], device: torch.device,
                       stream: torch.cuda.Stream | None = None) -> Iterator[dict[str, Any]]:
    """Yield batches already on `device`. On CUDA the next batch is copied on a side stream (`stream`, or a new
    one) while the current one is being used, so the host-to-device copy overlaps compute; elsewhere batches
    pass through. A caller that prefetches epoch after epoch passes one stream: PyTorch hands streams out in turn
    from a pool of 32 per device, so a new one every epoch soon comes round to those the graph runner uses."""
    if device.type != "cuda":
        yield from batches
        return
    stream = stream if stream is not None else torch.cuda.Stream(device)

    def load(batch: dict[str, Any]) -> dict[str, Any]:
        with torch.cuda.stream(stream):
            return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in batch.items()}

    iterator = iter(batches)
    upcoming = next(iterator, None)
    upcoming = load(upcoming) if upcoming is not None else None
    while upcoming is not None:
        torch.cuda.current_stream(device).wait_stream(stream)
        current = upcoming
        for value in current.values():
            if isinstance(value, torch.Tensor):
                value.record_stream(torch.cuda.current_stream(device))  # keep the memory until it is used
        upcoming = next(iterator, None)
        upcoming = load(upcoming) if upcoming is not None else None
        yield current


class DataWait:
    """Host seconds spent waiting for the next batch. The loader keeps ahead of training when this stays near
    zero. Its share of the wall time bounds the fraction of time the GPU waits for data from above: the host runs
    ahead of the GPU, queueing work (with captured steps, until the next print), so the GPU may still be busy
    with queued steps while the host waits."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        iterator = iter(batches)
        while True:
            start = time.perf_counter()
            batch = next(iterator, None)
            self.seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch
