"""The pipeline's side of a torchrun job: joining the process group, and how the fit was sharded.

Distributed (``als.distributed=true`` under ``torchrun --nproc_per_node=N``): every rank joins
the process group, loads and splits the same data and trains its shard of users and items
(:mod:`recsys.als.distributed`); rank 0 alone evaluates, checkpoints, logs, shows progress and
writes the artifacts into its run folder, which every rank uses (so a restarted job resumes from
its checkpoint); the others wait for rank 0's test objective and return it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys.config import ConfigError, TrainConfig
from recsys.pipeline.job import logger

__all__ = ["distributed_report", "join_ranks"]


def join_ranks(conf: TrainConfig) -> Any | None:
    """The communicator of a distributed run (joining the job's process group), else None."""
    from recsys.als import distributed

    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed.launched_with_torchrun() else 1
    if not conf.als.distributed:
        if world > 1:
            raise ConfigError(
                f"als.distributed=false but this process is one of WORLD_SIZE={world} ranks "
                "(torchrun): each would train the whole model and write the same files; add "
                "als.distributed=true (or launch one process)"
            )
        return None
    if not distributed.launched_with_torchrun() and not torch.distributed.is_initialized():
        logger.warning(
            "als.distributed=true but this process was not started by torchrun (RANK and "
            "WORLD_SIZE are not set): training in one process"
        )
        return None
    from recsys.als.model import resolve_device

    return distributed.init_process_group(
        timeout_s=conf.als.distributed_timeout_s, device=resolve_device(conf.als.device)
    )


def distributed_report(comm: Any, matrix: sp.csr_matrix, timeout_s: float) -> dict[str, Any]:
    """How the fit was sharded and each rank's peak memory (a collective: every rank calls it)."""
    from recsys.als.distributed import shard_plan
    from recsys.memory import peak_rss_mb

    users, items = shard_plan(matrix, comm.world_size)
    user_nnz = [int(matrix.indptr[hi] - matrix.indptr[lo]) for lo, hi in users.ranges()]
    item_degrees = np.bincount(matrix.indices, minlength=matrix.shape[1])
    item_nnz = [int(item_degrees[lo:hi].sum()) for lo, hi in items.ranges()]
    rss = comm.all_gather_values([peak_rss_mb()], "gathering the ranks' peak memory")
    return {
        "world_size": comm.world_size,
        "backend": comm.backend,
        "timeout_s": timeout_s,
        "user_bounds": list(users.bounds),
        "item_bounds": list(items.bounds),
        "user_interactions_per_rank": user_nnz,
        "item_interactions_per_rank": item_nnz,
        "peak_rss_mb_per_rank": [round(float(v), 1) for v in rss[:, 0]],
    }
