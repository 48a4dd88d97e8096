"""What the model's scoring APIs share: query vectors, cosine neighbours, the shape of results.

A score is ``s(u, i) = q_u . e_i + o_u``: `e_i` the item embedding (factors, then the item bias),
`q_u` the user's factors (then a 1 with biases) and `o_u` the user bias plus the global mean.
Similarity is the cosine between factors, biases left out, as in `implicit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys.scoring import TopK, topk_items


def queries(
    factors: torch.Tensor, bias: torch.Tensor | None, global_bias: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query vectors and score offsets (float32) of users with these factors and biases (None
    without biases); the offset is summed in float64."""
    offsets = torch.full(
        (factors.shape[0],), global_bias, dtype=torch.float64, device=factors.device
    )
    if bias is not None:
        factors = torch.cat([factors, torch.ones_like(factors[:, :1])], dim=1)
        offsets = offsets + bias.double()
    return factors.float(), offsets.float()


def mask_tensor(allowed: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """A boolean mask of the rows that may be returned on `device`; None when it allows all."""
    return None if allowed is None or allowed.all() else torch.from_numpy(allowed).to(device)


def cosine_neighbours(
    table: torch.Tensor,
    idx: torch.Tensor,
    k: int,
    allowed: np.ndarray | None,
    exclude_self: bool,
) -> TopK:
    """The k rows of `table` most cosine-similar to its rows `idx`, within `allowed`; with
    `exclude_self` a row is never its own neighbour (otherwise it scores 1, the maximum)."""
    n = table.shape[0]
    unit = torch.nn.functional.normalize(table.float(), dim=1)
    itself = None
    if exclude_self:
        own = (np.ones(idx.numel(), np.float32), (np.arange(idx.numel()), idx.cpu().numpy()))
        itself = sp.csr_matrix(own, shape=(idx.numel(), n))
    return topk_items(
        unit[idx], unit, k, exclude=itself, allowed_items=mask_tensor(allowed, table.device)
    )


def as_results(query_ids: Any, top: TopK) -> tuple[np.ndarray, np.ndarray]:
    """Top-k results as numpy (int64 ids, float32 scores): one row per query id, or a single
    row (1-D) for one scalar id, as `implicit` returns them."""
    ids, scores = top.ids.cpu().numpy().astype(np.int64), top.scores.float().cpu().numpy()
    return (ids[0], scores[0]) if np.ndim(query_ids) == 0 else (ids, scores)
