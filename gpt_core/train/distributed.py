"""Data-parallel training: one process per device, launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 2 my_script.py

In the script, :func:`from_env` joins the process group (``None`` when the
script was not started by torchrun) and :func:`split_batch` says how many rows
and accumulation steps each process takes so that one optimizer step sees the
same rows as a single-process run::

    dist = from_env(cfg.device)
    rows, accum = split_batch(8, 2, dist.world)      # batch 8 x 2 micro-batches
    loader = make_loader(dataset, batch_size=rows, seed=0)
    for event in train(model, loader, val, replace(cfg, batch_size=rows, grad_accum=accum), dist=dist):
        ...
    dist.close()

:func:`gpt_core.train.train` shards the loaders with :meth:`Dist.shard`: global
micro-batch ``i`` goes to rank ``i % world``, and every rank shuffles alike
(same seeded generator), so no rank collates another's rows.
"""
from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ..errors import InvalidInput

__all__ = ["Dist", "from_env", "split_batch"]


@dataclass
class Dist:
    """This process's place in the group: rank ``rank`` of ``world``, on ``device``."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str  # "nccl" on CUDA, "gloo" on the CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, loader: Iterable, even: bool = True) -> Iterable:
        """This rank's part of ``loader``: global batch ``i`` goes to rank ``i % world``.

        ``even=True`` drops the last ``len % world`` batches so that every rank
        gets as many (training needs it: each step is a collective);
        ``even=False`` keeps them (evaluation sums what each rank saw).
        A torch ``DataLoader`` is split at its batch sampler, so that a rank only
        loads and collates its own batches; it keeps the loader's generator, so
        each epoch's permutation is the same on every rank.
        """
        if (isinstance(loader, DataLoader) and loader.batch_sampler is not None
                and not isinstance(loader.dataset, IterableDataset)):
            return _reloader(loader, _ShardedBatches(loader.batch_sampler, self.rank, self.world, even))
        return _Strided(loader, self.rank, self.world, even)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place; returns it."""
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.backend == "nccl":
            torch_dist.barrier(device_ids=[self.local_rank])
        else:
            torch_dist.barrier()

    def close(self) -> None:
        """Leave the group once every rank is here (a finished run's wrappers are freed first)."""
        if torch_dist.is_initialized():
            gc.collect()  # a DistributedDataParallel kept alive by a reference cycle must go while the group exists
            self.barrier()
            torch_dist.destroy_process_group()


def _rank_part(items: Iterable, rank: int, world: int, even: bool) -> Iterator:
    """Item ``i`` of ``items`` when ``i % world == rank``; a trailing incomplete group only when not ``even``."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == world:
            yield group[rank]
            group = []
    if not even and len(group) > rank:
        yield group[rank]


def _part_len(n: int, rank: int, world: int, even: bool) -> int:
    return n // world if even else max(0, math.ceil((n - rank) / world))


class _ShardedBatches(Sampler):
    """A batch sampler that keeps this rank's batches of another batch sampler."""

    def __init__(self, inner, rank: int, world: int, even: bool):
        self.inner, self.rank, self.world, self.even = inner, rank, world, even

    def __iter__(self):
        return _rank_part(self.inner, self.rank, self.world, self.even)

    def __len__(self) -> int:
        return _part_len(len(self.inner), self.rank, self.world, self.even)


class _Strided:
    """This rank's batches of any iterable (a list of batches, a generator)."""

    def __init__(self, inner: Iterable, rank: int, world: int, even: bool):
        self.inner, self.rank, self.world, self.even = inner, rank, world, even

    def __iter__(self):
        return _rank_part(self.inner, self.rank, self.world, self.even)

    def __len__(self) -> int:
        return _part_len(len(self.inner), self.rank, self.world, self.even)


def _reloader(loader: DataLoader, batch_sampler: Sampler) -> DataLoader:
    """A loader like ``loader`` (dataset, collate, workers, generator) over ``batch_sampler``."""
    kwargs = {}
    if loader.num_workers > 0:
        kwargs.update(prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers,
                      multiprocessing_context=loader.multiprocessing_context, worker_init_fn=loader.worker_init_fn,
                      timeout=loader.timeout)
    return DataLoader(loader.dataset, batch_sampler=batch_sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, generator=loader.generator,
                      **kwargs)


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise InvalidInput("train.dist_bad_env", "The environment variable {name} must be a whole number "
                           "(got {value}): start the script with torchrun.", name=name, value=repr(raw)) from None


def from_env(device: str = "auto") -> Dist | None:
    """Join the process group that ``torchrun`` describes in the environment; None when not under torchrun.

    CUDA ranks use NCCL and the GPU numbered ``LOCAL_RANK``; CPU ranks use gloo.
    Apple's mps device has no collective backend and is refused.
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    from . import pick_device

    world, rank = _env_int("WORLD_SIZE"), _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise InvalidInput("train.dist_bad_rank", "Rank {rank} does not exist in a group of {world} process(es): start "
                           "the script with torchrun.", rank=rank, world=world)
    kind = pick_device(device).type
    if kind == "mps":
        raise InvalidInput("train.dist_no_mps", "Data-parallel training does not run on Apple's mps device: choose cpu "
                           "or cuda.")
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InvalidInput("train.dist_not_enough_gpus", "Process {local_rank} needs GPU number {local_rank}, "
                               "but this machine has {count}: start at most {count} process(es) per machine.",
                               local_rank=local_rank, count=torch.cuda.device_count())
        dev, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(dev)
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank=torch_dist.get_rank(), world=torch_dist.get_world_size(), local_rank=local_rank, device=dev,
                backend=backend)


def split_batch(batch_size: int, grad_accum: int, world: int) -> tuple[int, int]:
    """(rows per micro-batch, micro-batches per step) on each of ``world`` ranks.

    One optimizer step still covers ``batch_size * grad_accum`` rows:
    ``world * accum * rows == batch_size * grad_accum``. The accumulation is
    divided first (``g = gcd(grad_accum, world)``), then the rows by what is left.
    """
    from . import _check_whole

    for name, value in (("batch_size", batch_size), ("grad_accum", grad_accum), ("world", world)):
        _check_whole(name, value, 1)
    g = math.gcd(grad_accum, world)
    rest = world // g
    if batch_size % rest:
        raise InvalidInput("train.dist_batch_not_divisible", "{world} processes cannot share {grad_accum} "
                           "micro-batch(es) of {batch_size} rows: the batch size must be a multiple of {rest}. Try "
                           "batch size {suggested}, or a grad_accum that is a multiple of {world}.", world=world,
                           grad_accum=grad_accum, batch_size=batch_size, rest=rest,
                           suggested=max(rest, batch_size // rest * rest))
    return batch_size // rest, grad_accum // g
