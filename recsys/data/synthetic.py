"""A synthetic implicit-feedback data set with a known, learnable structure.

The generator is the project's default data set: it needs no download, is deterministic by seed,
scales from a few hundred users (tests) to MovieLens-20M size, and has the three properties real
interaction data has and a recommender must cope with:

1. **Power-law item popularity**: item ``i`` has base weight
   ``(rank_i + 1) ** -popularity_exponent`` for a random popularity rank, so a few items collect
   most interactions (a popularity baseline is strong, as on real data).
2. **Heavy-tailed user activity**: user degrees are ``min_user_interactions`` plus a lognormal
   part, scaled to the requested total and capped at ``max_user_fraction * n_items``.
3. **Planted low-rank taste structure**: there are ``rank`` taste clusters; cluster ``c`` has item
   affinities ``a_ci ~ N(0, 1)`` and samples item ``i`` with probability proportional to
   ``popularity_i * exp(taste_strength * a_ci)``. Each user mixes 1..``clusters_per_user``
   clusters with Dirichlet weights. The log-probabilities are therefore (popularity +) rank
   ``rank``, which a low-rank model can recover and a popularity ranking cannot.

Sampling is vectorised and done in blocks of consecutive users (so temporaries stay small): a
user's draws are split between their clusters with one multinomial call, then each cluster's
draws for the whole block come from one multinomial over the items plus a shuffle (or an
inverse-CDF lookup for small counts). Repeated (user, item) draws are merged and users are topped
up in a few more rounds, oversampling by each user's observed repeat rate, until each has exactly
their target number of distinct items (a user who overshoots in a round keeps a random subset of
that round's new items).

Values (``values=``): ``"ratings"`` (default) are integer 1..5 stars that grow with the user's
affinity for the item plus noise (mean about 3.5, like MovieLens), so binarizing at >= 4 keeps the
better-matched items; ``"counts"`` are integer play counts ``>= 1`` (the number of draws plus a
geometric extra with mean ``exp(affinity)``); ``"binary"`` is all ones. Timestamps are integer
Unix seconds: each user is active in a random window inside ``[time_start, time_end]``.

Cost of the ``"ml20m"`` preset (138,493 users x 27,278 items x 20,000,263 interactions), measured
once on this project's shared 2-core development VM (numpy 2.4, single-threaded): 26 s of CPU time
(19 s user + 7 s system), 57 s wall clock while the machine was oversubscribed (load average 7),
0.78 GB peak resident memory; the result itself takes about 0.3 GB. ``"medium"`` takes about 2.5 s
of CPU time, ``"small"`` well under a second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from recsys.data.csr import csr
from recsys.data.interactions import Interactions

__all__ = ["SYNTHETIC_PRESETS", "synthetic", "synthetic_preset"]

#: Named sizes. ``"small"`` is the default training data set of the pipeline.
SYNTHETIC_PRESETS: dict[str, dict[str, Any]] = {
    # tests: a fraction of a second
    "tiny": {"n_users": 300, "n_items": 200, "n_interactions": 6_000, "rank": 4},
    # default training set: ALS trains in seconds on a CPU
    "small": {"n_users": 5_000, "n_items": 2_000, "n_interactions": 250_000, "rank": 16},
    "medium": {"n_users": 50_000, "n_items": 10_000, "n_interactions": 2_000_000, "rank": 32},
    # MovieLens-20M sizes (every MovieLens-20M user has at least 20 ratings)
    "ml20m": {
        "n_users": 138_493,
        "n_items": 27_278,
        "n_interactions": 20_000_263,
        "rank": 64,
        "min_user_interactions": 20,
    },
}

_TIME_START = 946_684_800  # 2000-01-01
_TIME_END = 1_420_070_400  # 2015-01-01


def synthetic_preset(name: str, *, seed: int = 0, **overrides: Any) -> Interactions:
    """Generate a named preset (``"tiny"``, ``"small"``, ``"medium"``, ``"ml20m"``).

    ``overrides`` replace any :func:`synthetic` argument of the preset.
    """
    if name not in SYNTHETIC_PRESETS:
        raise ValueError(
            f"unknown synthetic preset {name!r}; choose one of {sorted(SYNTHETIC_PRESETS)}"
        )
    kwargs = {**SYNTHETIC_PRESETS[name], "seed": seed, **overrides}
    return synthetic(**kwargs)


def synthetic(
    n_users: int = 5_000,
    n_items: int = 2_000,
    n_interactions: int = 250_000,
    *,
    rank: int = 16,
    seed: int = 0,
    popularity_exponent: float = 0.9,
    taste_strength: float = 2.0,
    clusters_per_user: int = 3,
    activity_sigma: float = 1.0,
    min_user_interactions: int = 2,
    max_user_fraction: float = 0.3,
    values: Literal["ratings", "counts", "binary"] = "ratings",
    time_start: int = _TIME_START,
    time_end: int = _TIME_END,
) -> Interactions:
    """Generate a synthetic interaction data set (see the module docstring for the model).

    Args:
        n_users, n_items: matrix shape; every user has at least ``min_user_interactions`` items,
            items in the far tail may have none.
        n_interactions: number of distinct (user, item) pairs (the nnz of the result, exactly,
            unless users cannot reach their target within the sampling rounds, which takes
            extreme settings).
        rank: number of taste clusters (rank of the planted log-affinity structure).
        seed: everything is a deterministic function of the arguments.
        popularity_exponent: Zipf exponent of item popularity (0 = uniform).
        taste_strength: how strongly clusters prefer their items (0 = no taste structure, only
            popularity: then no personalized model can beat popularity).
        clusters_per_user: each user mixes 1..this many clusters.
        activity_sigma: lognormal sigma of user activity (larger = heavier tail).
        min_user_interactions: smallest user degree.
        max_user_fraction: largest user degree as a fraction of ``n_items``.
        values: ``"ratings"`` (1..5), ``"counts"`` (>= 1) or ``"binary"`` (1).
        time_start, time_end: timestamp range (Unix seconds).

    Returns:
        :class:`Interactions` with int64 external ids ``0..n-1``, integer-valued float32 values
        and int64 timestamps.
    """
    _check_args(
        n_users, n_items, n_interactions, rank, clusters_per_user, min_user_interactions,
        max_user_fraction, values, time_start, time_end,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    plan = _Plan.draw(
        rng, n_users, n_items, rank, popularity_exponent, taste_strength, clusters_per_user
    )
    # heavy-tailed degrees summing exactly to n_interactions
    degree = _degrees(rng, n_users, n_items, n_interactions, activity_sigma,
                      min_user_interactions, max_user_fraction)  # fmt: skip
    # user activity windows for the timestamps
    span = time_end - time_start
    t_first = time_start + (rng.random(n_users) * 0.9 * span).astype(np.int64)
    t_len = ((time_end - t_first) * rng.random(n_users) ** 0.5).astype(np.int64) + 1
    cols, data, ts, row_nnz = _sample(rng, plan, degree, t_first, t_len, values)
    if values == "ratings" and data.size:
        _to_stars(data)

    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    shape = (n_users, n_items)
    matrix = csr(data, cols, indptr, shape)
    tmat = csr(ts, cols, indptr, shape)
    ids_u = np.arange(n_users, dtype=np.int64)
    ids_i = np.arange(n_items, dtype=np.int64)
    src = f"synthetic(n_users={n_users}, n_items={n_items}, nnz={matrix.nnz}, seed={seed})"
    return Interactions(matrix, ids_u, ids_i, tmat, None, src)


@dataclass
class _Plan:
    """The planted structure: one sampling distribution per taste cluster, and each user's
    clusters with their Dirichlet mixture weights."""

    affinity: np.ndarray  # rank x n_items, float32: a_ci
    probs: np.ndarray  # rank x n_items: popularity_i * exp(taste_strength * a_ci), normalised
    cdf: np.ndarray  # their cumulative sums (inverse-CDF lookups)
    user_clusters: np.ndarray  # n_users x clusters_per_user
    w: np.ndarray  # n_users x clusters_per_user, zero beyond each user's cluster count

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        n_users: int,
        n_items: int,
        rank: int,
        popularity_exponent: float,
        taste_strength: float,
        clusters_per_user: int,
    ) -> _Plan:
        """Draw the structure (item popularity and cluster taste, then the users' clusters)."""
        pop_rank = rng.permutation(n_items)
        log_pop = -popularity_exponent * np.log1p(pop_rank.astype(np.float64))
        affinity = rng.standard_normal((rank, n_items)).astype(np.float32)
        logits = log_pop[None, :] + taste_strength * affinity.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        cdf /= cdf[:, -1:]
        n_slots = clusters_per_user
        user_k = rng.integers(1, n_slots + 1, size=n_users)
        user_clusters = rng.integers(0, rank, size=(n_users, n_slots))
        w = rng.standard_gamma(1.0, size=(n_users, n_slots))
        w[np.arange(n_slots)[None, :] >= user_k[:, None]] = 0.0
        w /= w.sum(axis=1, keepdims=True)
        return cls(affinity, probs, cdf, user_clusters, w)


def _sample(
    rng: np.random.Generator,
    plan: _Plan,
    degree: np.ndarray,
    t_first: np.ndarray,
    t_len: np.ndarray,
    values: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item columns, values, timestamps, entries per user), users in order.

    Sampled and filled block by block (blocks of consecutive users), so that the temporaries
    stay small and memory is reused rather than freshly allocated. Ratings come out as
    affinity plus noise, to be turned into stars by :func:`_to_stars` once the global mean and
    standard deviation are known.
    """
    n_users, n_slots = plan.w.shape
    n_items = plan.probs.shape[1]
    total = int(degree.sum())
    cols = np.empty(total, dtype=np.int32)
    data = np.empty(total, dtype=np.float32)
    ts = np.empty(total, dtype=np.int64)
    row_nnz = np.zeros(n_users, dtype=np.int64)
    pos = 0
    for u0, u1 in itertools.pairwise(_blocks(degree, _BLOCK_DRAWS).tolist()):
        w, clusters = plan.w[u0:u1], plan.user_clusters[u0:u1]
        keys, mult = _sample_block(rng, degree[u0:u1], w, clusters, plan.probs, plan.cdf, n_items)
        rows = keys // n_items
        c = keys - rows * n_items
        del keys
        score = np.zeros(rows.size, dtype=np.float32)
        for s in range(n_slots):
            ws = w[:, s].astype(np.float32)[rows]
            score += ws * plan.affinity[clusters[:, s][rows], c]
        end = pos + rows.size
        if values == "ratings":
            noise = rng.standard_normal(rows.size, dtype=np.float32)
            data[pos:end] = score
            data[pos:end] += _RATING_NOISE * noise / _RATING_SLOPE
        elif values == "counts":
            p = 1.0 / (1.0 + np.exp(np.clip(score, -4.0, 4.0)))
            data[pos:end] = mult - 1 + rng.geometric(p)
        else:
            data[pos:end] = 1.0
        cols[pos:end] = c
        g = rows + u0
        ts[pos:end] = t_first[g] + (rng.random(rows.size) * t_len[g]).astype(np.int64)
        row_nnz[u0:u1] = np.bincount(rows, minlength=u1 - u0)
        pos = end
    return cols[:pos], data[:pos], ts[:pos], row_nnz


def _to_stars(data: np.ndarray) -> None:
    """Affinity (+ noise) -> 1..5 stars with mean about 3.5, like MovieLens (in place)."""
    mean = float(data.mean(dtype=np.float64))
    std = max(float(data.std(dtype=np.float64)), 1e-6)
    data -= mean
    data *= _RATING_SLOPE / std
    data += 3.5
    np.rint(data, out=data)
    np.clip(data, 1.0, 5.0, out=data)


_BLOCK_DRAWS = 1 << 21  # about 2M draws per block: 16 MB temporaries
_RATING_SLOPE = 1.0  # stars per standard deviation of (affinity + noise)
_RATING_NOISE = 0.7  # noise std relative to the affinity's


def _blocks(degree: np.ndarray, per_block: int) -> np.ndarray:
    """Boundaries of consecutive user blocks with about ``per_block`` interactions each."""
    csum = np.cumsum(degree)
    n_blocks = max(1, int(np.ceil(csum[-1] / per_block)))
    cuts = np.searchsorted(csum, np.arange(1, n_blocks) * (csum[-1] / n_blocks))
    return np.unique(np.concatenate(([0], cuts, [degree.size])))


def _check_args(
    n_users: int,
    n_items: int,
    n_interactions: int,
    rank: int,
    clusters_per_user: int,
    min_deg: int,
    max_frac: float,
    values: str,
    time_start: int,
    time_end: int,
) -> None:
    if n_users < 1 or n_items < 1:
        raise ValueError("n_users and n_items must be >= 1")
    if rank < 1 or clusters_per_user < 1:
        raise ValueError("rank and clusters_per_user must be >= 1")
    if not 1 <= min_deg <= n_items:
        raise ValueError(f"min_user_interactions must be in [1, n_items], got {min_deg}")
    max_deg = max(min_deg, int(max_frac * n_items))
    if not n_users * min_deg <= n_interactions <= n_users * max_deg:
        raise ValueError(
            f"n_interactions must be between n_users * min_user_interactions "
            f"({n_users * min_deg}) and n_users * max_user_fraction * n_items "
            f"({n_users * max_deg}), got {n_interactions}"
        )
    if values not in ("ratings", "counts", "binary"):
        raise ValueError(f"values must be 'ratings', 'counts' or 'binary', got {values!r}")
    if time_end <= time_start:
        raise ValueError("time_end must be after time_start")


def _degrees(
    rng: np.random.Generator,
    n_users: int,
    n_items: int,
    total: int,
    sigma: float,
    min_deg: int,
    max_frac: float,
) -> np.ndarray:
    """Integer degrees in [min_deg, max_deg] with a lognormal shape, summing exactly to total."""
    max_deg = max(min_deg, int(max_frac * n_items))
    raw = rng.lognormal(0.0, sigma, size=n_users)
    extra_total = total - min_deg * n_users
    deg = np.full(n_users, float(min_deg))
    free = np.ones(n_users, dtype=bool)
    for _ in range(50):  # scale, cap, rescale the uncapped users
        remaining = extra_total - (deg[~free] - min_deg).sum()
        if not free.any() or remaining <= 0:
            break
        deg[free] = min_deg + raw[free] * (remaining / raw[free].sum())
        over = deg > max_deg
        if not over.any():
            break
        deg[over] = max_deg
        free &= ~over
    out = np.floor(deg).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:  # hand out the rounding remainder to random users with room
        room = np.flatnonzero(out < max_deg)
        pick = rng.choice(room, size=min(short, room.size), replace=False)
        out[pick] += 1
    return out


def _sample_block(
    rng: np.random.Generator,
    degree: np.ndarray,
    w: np.ndarray,
    user_clusters: np.ndarray,
    probs: np.ndarray,
    cdf: np.ndarray,
    n_items: int,
    max_rounds: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys ``local_user * n_items + item`` with exactly ``degree[u]`` distinct
    items per user (unless the rounds run out), and how often each pair was drawn."""
    n_users, n_slots = w.shape
    n_clusters = probs.shape[0]
    keys = np.zeros(0, dtype=np.int64)  # distinct pairs of the first round, sorted
    mult = np.zeros(0, dtype=np.int64)  # how often each was drawn
    extra = np.zeros(0, dtype=np.int64)  # distinct pairs of the later rounds, sorted
    extra_mult = np.zeros(0, dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    factor = np.ones(n_users)  # draws per new distinct item, from the previous round
    flat_users = np.repeat(np.arange(n_users, dtype=np.int64), n_slots)
    flat_clusters = user_clusters.reshape(-1)
    by_cluster = np.argsort(flat_clusters, kind="stable")
    sorted_clusters = flat_clusters[by_cluster]
    item_range = np.arange(n_items, dtype=np.int64)
    for _ in range(max_rounds):
        need = degree - have
        if not (need > 0).any():
            break
        draws = np.where(need > 0, np.ceil(need * np.minimum(factor, 50.0)), 0).astype(np.int64)
        # split each user's draws between their clusters, then group the draws by cluster
        counts = rng.multinomial(draws, w).reshape(-1)[by_cluster]
        new = np.repeat(flat_users[by_cluster], counts)
        new *= n_items
        per_cluster = np.bincount(sorted_clusters, weights=counts, minlength=n_clusters)
        pos = 0
        for c in range(n_clusters):
            size = int(per_cluster[c])
            if size == 0:
                continue
            if size >= n_items // 4:
                # many draws: item counts from one multinomial, then a random order
                items = np.repeat(item_range, rng.multinomial(size, probs[c]))
                rng.shuffle(items)
            else:  # few draws: inverse-CDF lookup
                items = np.searchsorted(cdf[c], rng.random(size), side="right")
                np.minimum(items, n_items - 1, out=items)
            new[pos : pos + size] += items
            pos += size
        new.sort()
        first = np.flatnonzero(np.concatenate(([True], new[1:] != new[:-1])))
        new_mult = np.diff(np.append(first, new.size))
        new = new[first]
        # pairs not drawn before; a user who got more than needed keeps a random subset
        fresh = np.ones(new.size, dtype=bool)
        for known, known_mult in ((keys, mult), (extra, extra_mult)):
            if known.size == 0:
                continue
            cand = np.flatnonzero(fresh)
            at = np.minimum(np.searchsorted(known, new[cand]), known.size - 1)
            hit = known[at] == new[cand]
            known_mult[at[hit]] += new_mult[cand[hit]]
            fresh[cand[hit]] = False
        fresh = np.flatnonzero(fresh)
        fresh_user = new[fresh] // n_items
        gained = np.bincount(fresh_user, minlength=n_users)
        if (gained > need).any():
            fresh = fresh[np.argsort(fresh_user + rng.random(fresh.size))]
            fresh_user = new[fresh] // n_items
            rank = np.arange(fresh.size) - np.searchsorted(fresh_user, fresh_user, side="left")
            fresh = np.sort(fresh[rank < np.maximum(need, 0)[fresh_user]])
            gained = np.bincount(new[fresh] // n_items, minlength=n_users)
        if keys.size == 0:  # first round: everything is new
            keys, mult = new[fresh], new_mult[fresh]
        else:  # later rounds are small: collect them apart, merge once at the end
            extra, extra_mult = _merge_sorted(extra, extra_mult, new[fresh], new_mult[fresh])
        have += gained
        # next round: oversample by each user's observed draws per new distinct item
        factor = 1.25 * np.where(draws > 0, draws / np.maximum(gained, 1), 1.0)
    return _merge_sorted(keys, mult, extra, extra_mult)


def _merge_sorted(
    keys: np.ndarray, vals: np.ndarray, new_keys: np.ndarray, new_vals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted, disjoint key arrays (with their values) in linear time."""
    if keys.size == 0:
        return new_keys, new_vals
    if new_keys.size == 0:
        return keys, vals
    at = np.searchsorted(keys, new_keys) + np.arange(new_keys.size)
    is_new = np.zeros(keys.size + new_keys.size, dtype=bool)
    is_new[at] = True
    out_k = np.empty(is_new.size, dtype=keys.dtype)
    out_v = np.empty(is_new.size, dtype=vals.dtype)
    out_k[at], out_v[at] = new_keys, new_vals
    out_k[~is_new], out_v[~is_new] = keys, vals
    return out_k, out_v
