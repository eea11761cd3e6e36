"""Re-identification metrics: mAP and CMC with the Market-1501/VeRi protocol (shared/specs/pamtri.md §4).

Rules (the same as PAMTRI's ``eval_market1501`` and deep-person-reid's ``evaluate_rank``):

* distance: squared Euclidean on the raw (unnormalised) float32 features, ``‖q‖² + ‖g‖² − 2 q·g``;
* ranking: per query, gallery sorted by ascending distance with numpy's default ``argsort`` (so exact ties are
  ordered as the reference implementations order them);
* junk: gallery items with the query's id **and** camera are removed before scoring (VeRi's ``jk_index``);
* a query with no remaining item of its id is skipped and counted in ``num_skipped``;
* AP is non-interpolated: ``(1/R) Σ_k P@k`` over the R relevant positions k of the kept list; mAP is the mean over
  valid queries; CMC@r is the fraction of valid queries whose first match is at rank ≤ r, to ``max_rank``
  (capped at the gallery size). A query with fewer than ``max_rank`` kept items keeps its last CMC value (the
  reference code would produce ragged arrays there; VeRi never hits it).

How it is vectorised, and why it still equals the reference on ties: queries are processed in blocks of rows
(memory stays bounded by ``_BLOCK_ELEMENTS``). Within a block every row is sorted once (``np.sort`` is ~3x faster than
``argsort``) and each relevant item's position is found with one ``searchsorted`` over the whole block, using
order-preserving integer keys offset by the row index. That position is exact unless a relevant item's distance
equals another item's; only such rows (essentially never with real features) are re-ranked with ``argsort`` so
their tie order is numpy's, as in the references.
"""

from __future__ import annotations

import importlib.util
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MAX_RANK = 50
REPORT_RANKS = (1, 5, 10, 20, 50)
_BLOCK_ELEMENTS = 1 << 23  # query rows x gallery per block: 32 MiB per float32 block; peak ~130 MiB at VeRi scale


@dataclass(frozen=True)
class ReidResult:
    """Scores of one evaluation.

    Attributes:
        mAP (float): mean AP over valid queries, in [0, 1].
        cmc (ndarray[L] float32): CMC curve, ``cmc[r-1]`` = rank-r accuracy, ``L = min(max_rank, gallery)``.
        ap (ndarray[Q] float64): per-query AP, NaN for skipped queries.
        num_valid (int): queries with at least one valid match.
        num_skipped (int): queries skipped because every item of their id was junk or absent.
    """

    mAP: float
    cmc: np.ndarray
    ap: np.ndarray
    num_valid: int
    num_skipped: int

    def as_dict(self, ranks: Sequence[int] = REPORT_RANKS) -> dict[str, float]:
        """``mAP`` and ``rank<r>`` in percent (ranks beyond the curve are left out), plus the query counts."""
        out = {"mAP": 100.0 * self.mAP}
        for r in ranks:
            if r <= self.cmc.size:
                out[f"rank{r}"] = 100.0 * float(self.cmc[r - 1])
        out["num_valid_queries"] = float(self.num_valid)
        out["num_skipped_queries"] = float(self.num_skipped)
        return out


# ---------------------------------------------------------------------------------------------------------------
# distances


def squared_euclidean(qf: np.ndarray, gf: np.ndarray, gg: np.ndarray | None = None) -> np.ndarray:
    """Pairwise squared Euclidean distances.

    Args:
        qf (ndarray[Q, D] float32), gf (ndarray[G, D] float32): features, not normalised.
        gg (ndarray[G] float32, optional): ``‖g‖²`` when the caller already has it (block loops).
    Returns:
        ndarray[Q, G] float32: ``‖q‖² + ‖g‖² − 2 q·g`` (tiny negative values possible, as upstream's addmm).
    """
    qf = np.asarray(qf, np.float32)
    gf = np.asarray(gf, np.float32)
    d = qf @ gf.T
    d *= np.float32(-2.0)
    d += np.einsum("ij,ij->i", qf, qf)[:, None]
    d += (np.einsum("ij,ij->i", gf, gf) if gg is None else gg)[None, :]
    return d


def _block_rows(n_gallery: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_gallery))


def pairwise_distances(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
    """The full (Q, G) float32 matrix, built from the same row blocks :func:`evaluate` uses, so the two see
    bit-identical distances (a BLAS may round a block differently from the whole product)."""
    rows = _block_rows(len(gf))
    gg = np.einsum("ij,ij->i", gf, gf)
    return np.concatenate([squared_euclidean(qf[i : i + rows], gf, gg) for i in range(0, len(qf), rows)], axis=0)


# ---------------------------------------------------------------------------------------------------------------
# ranking core


def _sortable_inplace(x: np.ndarray) -> np.ndarray:
    """Turn finite float32 values into order-preserving int32 keys **in place** (returns the int32 view);
    equal floats get equal keys. Flipping the magnitude bits of negatives makes signed-int order = float order."""
    x += np.float32(0.0)  # -0.0 -> +0.0, which compares equal to it
    bits = x.view(np.int32)
    flip = bits >> 31  # all ones for negatives
    flip &= np.int32(0x7FFFFFFF)
    bits ^= flip
    return bits


def _score_rows_argsort(
    d: np.ndarray, qp: np.ndarray, qc: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (AP, first-match rank, number of relevant) from a full argsort: the literal protocol, used for rows
    whose relevant items tie with other items (so the tie order is numpy's, as in the references)."""
    order = np.argsort(d, axis=1)
    gp = g_pids[order]
    same_id = gp == qp[:, None]
    keep = ~(same_id & (g_camids[order] == qc[:, None]))
    match = same_id & keep
    kept_rank = np.cumsum(keep, axis=1)  # 1-based rank of each kept item in the cleaned list
    hits = np.cumsum(match, axis=1)
    num_rel = match.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(match, hits / kept_rank, 0.0).sum(axis=1) / num_rel
    first = np.where(num_rel > 0, kept_rank[np.arange(len(d)), match.argmax(axis=1)], 0)
    return ap, first, num_rel


def _score_block(
    d: np.ndarray, qp: np.ndarray, qc: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row AP (NaN where no relevant item), first-match rank (1-based, 0 = none) and relevant count for one
    block of distance rows (B, G)."""
    n_rows, n_gal = d.shape
    # Same-id items are few per row (~60 of 11579 on VeRi): find them once, split them by camera on the pair list.
    id_r, id_c = np.nonzero(g_pids[None, :] == qp[:, None])  # row-major: rows ascending
    same_cam = g_camids[id_c] == qc[id_r]
    rel_r, rel_c = id_r[~same_cam], id_c[~same_cam]
    junk_r, junk_c = id_r[same_cam], id_c[same_cam]
    num_rel = np.bincount(rel_r, minlength=n_rows)

    # Position of each relevant item in its row's sorted distances, via one searchsorted over the block:
    # row r's keys are offset by r << 32, so the flattened sorted block is globally sorted.
    offset = np.arange(n_rows, dtype=np.int64) << 32
    flat = _sortable_inplace(np.sort(d, axis=1)).astype(np.int64)
    flat += offset[:, None]
    flat = flat.ravel()
    key = _sortable_inplace(d[rel_r, rel_c]).astype(np.int64) + offset[rel_r]
    below = np.searchsorted(flat, key, side="left")
    ties = np.searchsorted(flat, key, side="right") - below > 1
    del flat
    below -= rel_r.astype(np.int64) * n_gal
    # Junk items (same id, same camera) ranked before it are removed from the list: subtract them.
    junk_keys = np.sort(_sortable_inplace(d[junk_r, junk_c]).astype(np.int64) + offset[junk_r])
    below -= np.searchsorted(junk_keys, key, side="left") - np.searchsorted(junk_keys, offset[rel_r], side="left")
    kept_rank = below + 1

    # AP = mean over relevant items (in rank order) of (#relevant up to it) / rank.
    order = np.argsort(rel_r * np.int64(n_gal + 1) + kept_rank, kind="stable")
    rr, kr = rel_r[order], kept_rank[order]
    start = np.concatenate(([0], np.cumsum(num_rel)[:-1]))
    nth = np.arange(rr.size) - start[rr] + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(rr, weights=nth / kr, minlength=n_rows) / num_rel
    first = np.zeros(n_rows, np.int64)
    first[num_rel > 0] = kr[start[num_rel > 0]]

    tie_rows = np.unique(rel_r[ties])
    if tie_rows.size:
        ap[tie_rows], first[tie_rows], _ = _score_rows_argsort(
            d[tie_rows], qp[tie_rows], qc[tie_rows], g_pids, g_camids
        )
    return ap, first, num_rel


# ---------------------------------------------------------------------------------------------------------------
# public entry points


def _check_labels(n_q: int, n_g: int, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any) -> tuple[np.ndarray, ...]:
    out = []
    for name, arr, n in (("q_pids", q_pids, n_q), ("g_pids", g_pids, n_g), ("q_camids", q_camids, n_q),
                         ("g_camids", g_camids, n_g)):
        a = np.asarray(arr)
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(f"{name} must be 1-D with {n} entries, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
        out.append(a.astype(np.int64))
    return tuple(out)


def _evaluate_blocks(
    n_q: int, n_g: int, distances: Callable[[int, int], np.ndarray], labels: tuple[np.ndarray, ...], max_rank: int
) -> ReidResult:
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if n_q == 0 or n_g == 0:
        raise ValueError(f"need at least one query and one gallery item, got {n_q} queries, {n_g} gallery")
    q_pids, g_pids, q_camids, g_camids = labels
    ap = np.empty(n_q, np.float64)
    first = np.empty(n_q, np.int64)
    rows = _block_rows(n_g)
    for i in range(0, n_q, rows):
        j = min(n_q, i + rows)
        d = distances(i, j)
        if not np.isfinite(d).all():
            raise ValueError(f"distances of queries {i}..{j - 1} contain NaN or inf (non-finite features?)")
        ap[i:j], first[i:j], _ = _score_block(d, q_pids[i:j], q_camids[i:j], g_pids, g_camids)
    valid = first > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery (every same-id item is junk or absent)")
    length = min(max_rank, n_g)
    hist = np.bincount(first[valid], minlength=n_g + 1)[1 : length + 1]
    cmc = (np.cumsum(hist) / num_valid).astype(np.float32)
    ap[~valid] = np.nan
    return ReidResult(float(ap[valid].mean()), cmc, ap, num_valid, n_q - num_valid)


def evaluate(
    qf: np.ndarray, gf: np.ndarray, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
    *, max_rank: int = DEFAULT_MAX_RANK,
) -> ReidResult:
    """mAP and CMC of query features `qf (ndarray[Q, D])` against gallery `gf (ndarray[G, D])` with their vehicle
    ids and camera ids (1-D integer arrays). Distances are computed block by block (memory stays bounded)."""
    qf = np.asarray(qf, np.float32)
    gf = np.asarray(gf, np.float32)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D) with the same D, got {qf.shape} and {gf.shape}")
    labels = _check_labels(len(qf), len(gf), q_pids, g_pids, q_camids, g_camids)
    gg = np.einsum("ij,ij->i", gf, gf)
    return _evaluate_blocks(len(qf), len(gf), lambda i, j: squared_euclidean(qf[i:j], gf, gg), labels, max_rank)


def evaluate_distmat(
    distmat: np.ndarray, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, *, max_rank: int = DEFAULT_MAX_RANK
) -> ReidResult:
    """Same as :func:`evaluate` from a precomputed (Q, G) distance matrix (smaller = more similar)."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {distmat.shape}")
    labels = _check_labels(*distmat.shape, q_pids, g_pids, q_camids, g_camids)
    rows = lambda i, j: np.ascontiguousarray(distmat[i:j], np.float32)  # noqa: E731
    return _evaluate_blocks(*distmat.shape, rows, labels, max_rank)


# ---------------------------------------------------------------------------------------------------------------
# reference + benchmark


def load_torchreid_evaluate_rank() -> Callable[..., tuple[np.ndarray, float]] | None:
    """deep-person-reid's ``evaluate_rank`` (PyPI ``torchreid``; ``torchreid.reid.metrics.rank``), or None.

    The PyPI package's ``__init__`` imports torchvision, tensorboard, gdown ...; when that fails the metrics
    module (numpy only) is loaded from its file, without running the package ``__init__``."""
    try:
        from torchreid.reid.metrics.rank import evaluate_rank  # type: ignore[import-not-found]

        return evaluate_rank
    except Exception:  # noqa: BLE001 - any failure of the eager package imports: try the file itself
        pass
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "reid" / "metrics" / "rank.py"
    if not path.is_file():
        return None
    module_spec = importlib.util.spec_from_file_location("_zoo_torchreid_rank", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cython evaluation unavailable": the PyPI wheel ships no .pyx build
        module_spec.loader.exec_module(module)
    fn = module.evaluate_rank
    return lambda *a, **k: fn(*a, use_cython=False, **k)


def synthetic_veri(
    n_query: int = 1678, n_gallery: int = 11579, dim: int = 1024, n_ids: int = 200, n_cams: int = 20, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Random VeRi-sized features: per-id centres plus noise (so rankings are neither perfect nor random);
    returns ``qf, gf, q_pids, g_pids, q_camids, g_camids``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    q_pids = rng.integers(0, n_ids, n_query)
    g_pids = np.concatenate([np.arange(n_ids), rng.integers(0, n_ids, n_gallery - n_ids)])
    # Noise 2.7 per dimension gives mAP ~65 % / rank-1 ~99 %, the regime of the real VeRi numbers.
    qf = centres[q_pids] + 2.7 * rng.standard_normal((n_query, dim), dtype=np.float32)
    gf = centres[g_pids] + 2.7 * rng.standard_normal((n_gallery, dim), dtype=np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(1, n_cams + 1, n_query), rng.integers(1, n_cams + 1, n_gallery)


def benchmark(seed: int = 0, repeats: int = 3, *, compare_torchreid: bool = True) -> dict[str, float]:
    """Time the evaluation at VeRi scale (1678 x 11579, 1024-d); data generation is not timed.

    Returns ``evaluate_s`` (features -> metrics, best of `repeats`), ``evaluate_distmat_s`` (distance matrix ->
    metrics), ``peak_mib`` (tracemalloc peak of one :func:`evaluate`, inputs excluded), ``maxrss_mib`` (process
    high-water mark), ``mAP``/``rank1`` of the synthetic data, and when torchreid is importable
    ``torchreid_s`` (its python ``evaluate_rank`` on the same distance matrix), ``speedup`` (torchreid_s /
    evaluate_distmat_s), ``speedup_end_to_end`` ((distances + torchreid) / evaluate_s) and ``max_abs_diff`` (largest
    difference over mAP and the CMC curve)."""
    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_veri(seed=seed)

    def best(fn: Callable[[], Any]) -> tuple[float, Any]:
        times, value = [], None
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    t_eval, res = best(lambda: evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams))
    t_dist, distmat = best(lambda: pairwise_distances(qf, gf))
    t_evald, res_d = best(lambda: evaluate_distmat(distmat, q_pids, g_pids, q_cams, g_cams))
    tracemalloc.start()
    evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {
        "evaluate_s": t_eval,
        "distances_s": t_dist,
        "evaluate_distmat_s": t_evald,
        "peak_mib": peak / 2**20,
        "maxrss_mib": rss_kib / 1024 if sys.platform != "darwin" else rss_kib / 2**20,
        "mAP": 100.0 * res.mAP,
        "rank1": 100.0 * float(res.cmc[0]),
        "distmat_vs_features_equal": float(res_d.mAP == res.mAP and np.array_equal(res_d.cmc, res.cmc)),
    }
    oracle = load_torchreid_evaluate_rank() if compare_torchreid else None
    if oracle is not None:
        t0 = time.perf_counter()
        cmc_ref, map_ref = oracle(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=DEFAULT_MAX_RANK)
        out["torchreid_s"] = time.perf_counter() - t0
        out["speedup"] = out["torchreid_s"] / t_evald
        out["speedup_end_to_end"] = (t_dist + out["torchreid_s"]) / t_eval
        out["max_abs_diff"] = float(max(abs(map_ref - res.mAP), np.abs(cmc_ref - res.cmc).max()))
    return out
