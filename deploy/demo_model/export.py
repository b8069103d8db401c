#!/usr/bin/env python3
"""Build model bundles for rankd.

A *bundle* is a directory that rankd loads as one unit:

    DIR/
      model.pt            TorchScript module (torch.jit.save), CPU tensors
      items.safetensors   exactly one tensor, "items": float32 [item_count, item_dim], contiguous
      golden.json         known-good answers computed with the saved model (fp32, CPU)
      example_query.json  one query plus 1000 candidate ids, for the README quick start
      eval.json           optional held-out evaluation set (demo: always; package: --eval)
      manifest.json       written last; lists the sha256 of model.pt, items.safetensors,
                          golden.json and eval.json (when present)

manifest.json:

    {"format_version": 1, "name": "demo-ranker", "version": "1",
     "query_dim": 32, "item_dim": 64, "item_count": 100000, "precision": "fp32",
     "created_at": "2026-11-27T19:40:00Z",
     "files": {"model.pt": "<sha256>", "items.safetensors": "<sha256>", "golden.json": "<sha256>"},
     "training": {...informational only...}}

golden.json:

    {"cases": [{"query": [f32 x query_dim], "candidates": [i64 ...], "top_k": 10,
                "expected_ids": [i64 x top_k], "expected_scores": [f32 x top_k]}, ...]}

eval.json:

    {"k": 10, "queries": [{"query": [f32 x query_dim], "candidates": [i64 ...],
                           "labels": [int >= 0, one per candidate]}, ...]}

    Graded relevance labels for NDCG@k (gain 2^label - 1).  `compress` needs it to measure
    what a compressed model loses against its parent on data neither was trained on.

    expected_ids are in descending score order.  A case is only kept when the gap between
    the top_k-th and the (top_k+1)-th best score is at least 0.05 * std(scores of the case)
    and at least 1e-2, so a replay in fp16/bf16 cannot legitimately change which ids make
    the cut.  The order *within* the top_k is not protected by that margin.

Model contract (what rankd calls):

    forward(query: Tensor[B, query_dim] float32,
            items: Tensor[B, N, item_dim] float32) -> Tensor[B, N]   (higher = more relevant)

The bundle is assembled in a sibling directory DIR.tmp-<pid> and renamed into place, and
manifest.json is the last file written into it, so a reader never sees a half-written
bundle that carries a manifest.

Subcommands:

    export.py demo    --out DIR   train a small MLP ranker on a synthetic catalogue
    export.py package --out DIR   wrap your own TorchScript model and item table
    export.py compress --from DIR --method M --out DIR
                                  derive a smaller/faster bundle (see compress.py)

The demo is deterministic for a given --seed as long as training runs its full --steps;
--train-seconds is a wall-clock safety cap and, when it cuts training short, the result
depends on machine speed (a warning is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# libgomp's default busy-waiting makes 2-thread torch ~5x slower whenever another process
# (say, a concurrent cargo build) holds one of the cores.  Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from bundle_files import (  # noqa: E402,F401  (re-exported for compress.py and quantize.py)
    EVAL_FILE, EXAMPLE_FILE, FORMAT_VERSION, GOLDEN_FILE, ITEMS_FILE, ITEMS_TENSOR, MANIFEST_FILE, MODEL_FILE,
    BundleError, build_bundle, bundle_summary, check_destination, created_at_value, fsync_path, log,
    sha256_file, warn, write_items, write_json, write_manifest,
)

EXIT_ERROR = 2
TORCH_THREADS = 2

# Golden-case acceptance rule (see module docstring).
GOLDEN_REL_MARGIN = 0.05
GOLDEN_ABS_MARGIN = 1e-2
GOLDEN_MAX_ATTEMPTS = 2000
EXAMPLE_CANDIDATES = 1000

# Demo evaluation protocol.
EVAL_QUERIES = 200
EVAL_CANDIDATES = 100
EVAL_K = 10
# Per-list relevance quantiles that separate labels 0|1|2|3.
LABEL_QUANTILES = (0.50, 0.80, 0.95)

# Named, independent random streams, all derived from --seed.
STREAMS = ("catalogue", "relevance", "train", "eval", "golden", "example", "check")


def make_streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children)}


# --------------------------------------------------------------------------------------
# Demo model and synthetic data
# --------------------------------------------------------------------------------------


class MlpRanker(nn.Module):
    """Scores every (query, item) pair with an MLP over the concatenation [query, item]."""

    def __init__(self, query_dim: int, item_dim: int, hidden: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        # Layers are created in the same order as the original fixed (256, 128) network, so
        # the default draws identical initial weights from torch.manual_seed.
        layers: list[nn.Module] = []
        width = query_dim + item_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, query: Tensor, items: Tensor) -> Tensor:
        # query [B, Dq], items [B, N, Di] -> scores [B, N]
        q = query.unsqueeze(1).expand(-1, items.size(1), -1)
        return self.mlp(torch.cat([q, items], dim=-1)).squeeze(-1)


@dataclass
class HiddenRelevance:
    """The ground truth the demo model has to learn.

    r(q, x) = <q A, x> / sqrt(Di)  +  <tanh(x B), q C> / sqrt(H)

    a bilinear part plus a nonlinear interaction part; both are O(1) for q, x ~ N(0, 1).
    """

    a: Tensor  # [Dq, Di]
    b: Tensor  # [Di, H]
    c: Tensor  # [Dq, H]

    @classmethod
    def random(
        cls, rng: np.random.Generator, query_dim: int, item_dim: int, hidden: int = 16
    ) -> "HiddenRelevance":
        def mat(rows: int, cols: int, scale: float) -> Tensor:
            return torch.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32) * scale)

        return cls(
            a=mat(query_dim, item_dim, 1.0 / math.sqrt(query_dim)),
            b=mat(item_dim, hidden, 2.0 / math.sqrt(item_dim)),
            c=mat(query_dim, hidden, 1.0 / math.sqrt(query_dim)),
        )

    def __call__(self, query: Tensor, items: Tensor) -> Tensor:
        bilinear = torch.einsum("bd,bnd->bn", query @ self.a, items) / math.sqrt(self.a.shape[1])
        nonlinear = torch.einsum("bnh,bh->bn", torch.tanh(items @ self.b), query @ self.c)
        return bilinear + nonlinear / math.sqrt(self.b.shape[1])


def make_catalogue(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """Item features: i.i.d. N(0, 1) float32, so every feature is O(1)."""
    return rng.standard_normal((count, dim), dtype=np.float32)


def distinct_ids(rng: np.random.Generator, population: int, count: int) -> np.ndarray:
    return rng.choice(population, size=count, replace=False).astype(np.int64)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    seconds: float
    stopped_by: str  # "steps" or "time"
    final_loss: float


def standardize_per_list(rel: Tensor) -> Tensor:
    mean = rel.mean(dim=1, keepdim=True)
    std = rel.std(dim=1, keepdim=True).clamp_min(1e-6)
    return (rel - mean) / std


def learning_rate(step: int, total: int, peak: float) -> float:
    """Cosine decay from peak to 10% of peak over the step budget."""
    progress = min(step / max(total, 1), 1.0)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_ranker(
    model: nn.Module,
    catalogue: Tensor,
    relevance: HiddenRelevance,
    rng: np.random.Generator,
    *,
    max_steps: int,
    max_seconds: float,
    queries_per_step: int = 64,
    list_size: int = 64,
    peak_lr: float = 3e-3,
    log_every_s: float = 3.0,
) -> TrainResult:
    """Pointwise MSE against per-list standardized relevance.

    Listwise softmax cross-entropy was tried as well; on this task MSE on standardized
    relevance reached a clearly higher NDCG@10 in the same time and keeps scores at a
    std of about 1 around 0, which suits reduced-precision serving.
    """
    query_dim = relevance.a.shape[0]
    item_count = catalogue.shape[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=peak_lr)
    model.train()

    start = time.monotonic()
    next_log = start + log_every_s
    window_loss, window_steps, loss_value = 0.0, 0, float("nan")
    stopped_by, step = "steps", 0
    while step < max_steps:
        if time.monotonic() - start >= max_seconds:
            stopped_by = "time"
            break
        query = torch.from_numpy(rng.standard_normal((queries_per_step, query_dim), dtype=np.float32))
        ids = torch.from_numpy(rng.integers(0, item_count, size=(queries_per_step, list_size)))
        items = catalogue[ids]
        target = standardize_per_list(relevance(query, items))

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, max_steps, peak_lr)
        loss = nn.functional.mse_loss(model(query, items), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1

        loss_value = loss.item()
        window_loss += loss_value
        window_steps += 1
        now = time.monotonic()
        if now >= next_log:
            log(f"  step {step:5d}/{max_steps}  loss {window_loss / window_steps:.4f}  ({now - start:.1f}s)")
            window_loss, window_steps = 0.0, 0
            next_log = now + log_every_s

    model.eval()
    seconds = time.monotonic() - start
    log(f"  trained {step} steps in {seconds:.1f}s, last loss {loss_value:.4f}")
    return TrainResult(steps=step, seconds=seconds, stopped_by=stopped_by, final_loss=loss_value)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def graded_labels(relevance: np.ndarray) -> np.ndarray:
    """Labels 0..3 per list from the per-list relevance quantiles in LABEL_QUANTILES."""
    thresholds = np.quantile(relevance, LABEL_QUANTILES, axis=1).T  # [B, 3]
    return (relevance[:, :, None] > thresholds[:, None, :]).sum(axis=2)


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean NDCG@k with gain 2^label - 1 and log2 discount."""
    gains = np.exp2(labels.astype(np.float64)) - 1.0
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(gains, ranked, axis=1) * discount).sum(axis=1)
    ideal = (-np.sort(-gains, axis=1)[:, :k] * discount).sum(axis=1)
    return float(np.mean(dcg / np.maximum(ideal, 1e-12)))


@dataclass
class EvalResult:
    model_ndcg: float
    random_ndcg: float
    score_std: float
    eval_set: dict  # the held-out set in eval.json form


def eval_set_json(k: int, queries: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "k": k,
        "queries": [
            {"query": [float(v) for v in q], "candidates": [int(i) for i in c], "labels": [int(v) for v in lab]}
            for q, c, lab in zip(queries, ids, labels)
        ],
    }


def _json_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_eval_set(path: Path, query_dim: int, item_count: int) -> dict:
    """Reads and checks an eval.json; returns it normalised (floats as f32-rounded floats)."""
    if not path.is_file():
        raise BundleError(f"eval set {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read eval set {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("queries"), list) or not data["queries"]:
        raise BundleError(f'eval set {path} must be {{"k": int, "queries": [non-empty list]}}')
    k = data.get("k")
    if not _json_int(k) or k < 1:
        raise BundleError(f"eval set {path}: k must be a positive integer, got {k!r}")
    out = []
    for n, entry in enumerate(data["queries"]):
        where = f"eval set {path}, queries[{n}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{where} must be an object with query, candidates, labels")
        query, cands, labels = entry.get("query"), entry.get("candidates"), entry.get("labels")
        if (
            not isinstance(query, list)
            or len(query) != query_dim
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in query)
        ):
            raise BundleError(f"{where}: query must be {query_dim} finite numbers")
        if not isinstance(cands, list) or len(cands) < k or not all(_json_int(i) for i in cands):
            raise BundleError(f"{where}: candidates must be at least k={k} integer item ids")
        if any(i < 0 or i >= item_count for i in cands):
            raise BundleError(f"{where}: candidate ids must lie in [0, {item_count})")
        if len(set(cands)) != len(cands):
            raise BundleError(f"{where}: candidate ids repeat")
        if not isinstance(labels, list) or len(labels) != len(cands) or not all(_json_int(v) and v >= 0 for v in labels):
            raise BundleError(f"{where}: labels must be one integer >= 0 per candidate")
        out.append({"query": [float(np.float32(v)) for v in query], "candidates": cands, "labels": labels})
    return {"k": k, "queries": out}


def evaluate(
    model: nn.Module, catalogue: Tensor, relevance: HiddenRelevance, rng: np.random.Generator
) -> EvalResult:
    query_dim = relevance.a.shape[0]
    queries = torch.from_numpy(rng.standard_normal((EVAL_QUERIES, query_dim), dtype=np.float32))
    ids = np.stack([distinct_ids(rng, catalogue.shape[0], EVAL_CANDIDATES) for _ in range(EVAL_QUERIES)])
    items = catalogue[torch.from_numpy(ids)]
    with torch.no_grad():
        scores = model(queries, items).numpy()
        labels = graded_labels(relevance(queries, items).numpy().astype(np.float64))
    random_scores = rng.random(scores.shape)
    return EvalResult(
        model_ndcg=ndcg_at_k(scores, labels, EVAL_K),
        random_ndcg=ndcg_at_k(random_scores, labels, EVAL_K),
        score_std=float(np.mean(np.std(scores.astype(np.float64), axis=1))),
        eval_set=eval_set_json(EVAL_K, queries.numpy(), ids, labels),
    )


# --------------------------------------------------------------------------------------
# Golden cases
# --------------------------------------------------------------------------------------

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_scorer(model: torch.jit.ScriptModule, items: Tensor) -> Scorer:
    """Scores one query against candidate ids with batch size 1, float32, CPU."""

    def score(query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(query)[None, :], items[torch.from_numpy(ids)][None, :, :])
        if not isinstance(out, Tensor) or tuple(out.shape) != (1, len(ids)):
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise BundleError(f"model returned {shape} for 1 query x {len(ids)} candidates, expected [1, {len(ids)}]")
        return out[0].to(torch.float32).numpy()

    return score


def golden_case(query: np.ndarray, ids: np.ndarray, scores: np.ndarray, top_k: int) -> dict | None:
    """The case as written to golden.json, or None if the top_k boundary is too close."""
    if not np.all(np.isfinite(scores)):
        raise BundleError("model produced non-finite scores (NaN/inf) while computing golden cases")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order].astype(np.float64)
    gap = ranked[top_k - 1] - ranked[top_k]
    if gap < max(GOLDEN_REL_MARGIN * float(np.std(scores.astype(np.float64))), GOLDEN_ABS_MARGIN):
        return None
    top = order[:top_k]
    return {
        "query": [float(v) for v in query],
        "candidates": [int(i) for i in ids],
        "top_k": top_k,
        "expected_ids": [int(ids[i]) for i in top],
        "expected_scores": [float(scores[i]) for i in top],
    }


def make_golden_cases(
    scorer: Scorer,
    rng: np.random.Generator,
    *,
    query_dim: int,
    item_count: int,
    candidate_counts: list[int],
    top_k: int,
) -> list[dict]:
    cases = []
    for n_candidates in candidate_counts:
        for _ in range(GOLDEN_MAX_ATTEMPTS):
            query = rng.standard_normal(query_dim, dtype=np.float32)
            ids = distinct_ids(rng, item_count, n_candidates)
            case = golden_case(query, ids, scorer(query, ids), top_k)
            if case is not None:
                cases.append(case)
                break
        else:
            raise BundleError(
                f"no golden case with {n_candidates} candidates had a clear gap between rank "
                f"{top_k} and {top_k + 1} after {GOLDEN_MAX_ATTEMPTS} attempts "
                f"(need >= {GOLDEN_REL_MARGIN} x score std and >= {GOLDEN_ABS_MARGIN}); "
                "are the model's scores (nearly) constant?"
            )
    return cases


def make_example_query(rng: np.random.Generator, query_dim: int, item_count: int) -> dict:
    query = rng.standard_normal(query_dim, dtype=np.float32)
    ids = distinct_ids(rng, item_count, min(EXAMPLE_CANDIDATES, item_count))
    return {"query": [float(v) for v in query], "candidates": [int(i) for i in ids]}


# --------------------------------------------------------------------------------------
# Bundle files
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------


def script_and_verify(model: nn.Module, path: Path, query: Tensor, items: Tensor) -> torch.jit.ScriptModule:
    """Saves model as TorchScript at path and checks the reloaded copy matches eager."""
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    reloaded = torch.jit.load(str(path), map_location="cpu")
    reloaded.eval()
    with torch.no_grad():
        diff = (reloaded(query, items) - model(query, items)).abs().max().item()
    log(f"  reloaded TorchScript model matches eager model (max |diff| = {diff:.3g})")
    if not diff <= 1e-5:
        raise BundleError(f"reloaded TorchScript model disagrees with the eager model (max |diff| = {diff})")
    return reloaded


def run_demo(args: argparse.Namespace) -> int:
    for flag in ("items", "item_dim", "query_dim", "steps"):
        if getattr(args, flag) < 1:
            raise BundleError(f"--{flag.replace('_', '-')} must be positive")
    if args.items < EXAMPLE_CANDIDATES:
        raise BundleError(f"--items must be at least {EXAMPLE_CANDIDATES} (golden cases use 1000 candidates)")
    created_at = created_at_value(args.created_at)
    torch.set_num_threads(TORCH_THREADS)
    torch.use_deterministic_algorithms(True)
    total_start = time.monotonic()

    def fill(staging: Path) -> str:
        streams = make_streams(args.seed)
        log(f"generating {args.items} items x {args.item_dim} features (seed {args.seed})")
        catalogue = torch.from_numpy(make_catalogue(streams["catalogue"], args.items, args.item_dim))
        relevance = HiddenRelevance.random(streams["relevance"], args.query_dim, args.item_dim)

        torch.manual_seed(args.seed)
        model = MlpRanker(args.query_dim, args.item_dim)
        log(f"training MLP ranker: up to {args.steps} steps or {args.train_seconds:g}s, {TORCH_THREADS} threads")
        trained = train_ranker(
            model, catalogue, relevance, streams["train"], max_steps=args.steps, max_seconds=args.train_seconds
        )
        if trained.stopped_by == "time":
            warn(
                f"--train-seconds {args.train_seconds:g} stopped training after {trained.steps} of "
                f"{args.steps} steps; this bundle is not reproducible from the seed alone"
            )

        result = evaluate(model, catalogue, relevance, streams["eval"])
        log(
            f"NDCG@{EVAL_K} model={result.model_ndcg:.3f} random={result.random_ndcg:.3f} "
            f"({EVAL_QUERIES} held-out queries x {EVAL_CANDIDATES} candidates)"
        )
        log(f"  typical score std within a list: {result.score_std:.3f}")
        if result.model_ndcg < result.random_ndcg + 0.2:
            warn("the model barely beats random ranking; train longer (--steps / --train-seconds)")

        check_query = torch.from_numpy(streams["check"].standard_normal((4, args.query_dim), dtype=np.float32))
        check_items = catalogue[: 4 * 50].reshape(4, 50, args.item_dim)
        scripted = script_and_verify(model, staging / MODEL_FILE, check_query, check_items)

        write_items(staging / ITEMS_FILE, catalogue)
        cases = make_golden_cases(
            make_scorer(scripted, catalogue),
            streams["golden"],
            query_dim=args.query_dim,
            item_count=args.items,
            candidate_counts=[100] * 4 + [1000] * 4,
            top_k=10,
        )
        write_json(staging / GOLDEN_FILE, {"cases": cases})
        write_json(staging / EXAMPLE_FILE, make_example_query(streams["example"], args.query_dim, args.items))
        write_json(staging / EVAL_FILE, result.eval_set)
        write_manifest(
            staging,
            name=args.name,
            version=args.version,
            query_dim=args.query_dim,
            item_dim=args.item_dim,
            item_count=args.items,
            created_at=created_at,
            training={
                "seed": args.seed,
                "steps": trained.steps,
                "max_steps": args.steps,
                "stopped_by": trained.stopped_by,
                "loss": "mse vs per-list standardized relevance",
                "final_loss": round(trained.final_loss, 5),
                "ndcg_at_10": {"model": round(result.model_ndcg, 4), "random": round(result.random_ndcg, 4)},
                "eval": f"{EVAL_QUERIES} held-out queries x {EVAL_CANDIDATES} candidates",
                "score_std": round(result.score_std, 4),
                "torch_version": torch.__version__,
            },
        )
        return bundle_summary(args.name, args.version, args.items, args.query_dim, args.item_dim)

    build_bundle(Path(args.out), args.force, fill)
    log(f"done in {time.monotonic() - total_start:.1f}s")
    return 0


# --------------------------------------------------------------------------------------
# package
# --------------------------------------------------------------------------------------


def first_line(exc: BaseException) -> str:
    """The most telling line of an exception message (TorchScript errors are long)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def load_item_table(path: Path) -> Tensor:
    if not path.is_file():
        raise BundleError(f"item table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                if ITEMS_TENSOR in names:
                    name = ITEMS_TENSOR
                elif len(names) == 1:
                    name = names[0]
                else:
                    raise BundleError(
                        f"{path} holds tensors {names}; name the item table {ITEMS_TENSOR!r} or store only one"
                    )
                table = f.get_tensor(name)
        elif suffix == ".npy":
            table = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            raise BundleError(f"item table {path} must be a .safetensors or .npy file")
    except BundleError:
        raise
    except Exception as exc:  # corrupt or unreadable file
        raise BundleError(f"cannot read item table {path}: {first_line(exc)}") from exc

    if table.dim() != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise BundleError(f"item table {path} must be 2-D [items, item_dim], got shape {list(table.shape)}")
    if table.dtype == torch.bool or table.is_complex():
        raise BundleError(f"item table {path} has dtype {table.dtype}; expected a real number type")
    table = table.to(torch.float32).contiguous()
    if not torch.isfinite(table).all():
        raise BundleError(f"item table {path} contains NaN or infinite values (after conversion to float32)")
    return table


def load_user_model(path: Path) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise BundleError(f"model {path} does not exist")
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise BundleError(
            f"cannot load {path} as a TorchScript model (save it with torch.jit.save): {first_line(exc)}"
        ) from exc
    model.eval()
    return model


def check_model_contract(model: torch.jit.ScriptModule, query_dim: int, item_dim: int, rng: np.random.Generator) -> None:
    """The model must map query [2, Dq] and items [2, 5, Di] to finite float scores [2, 5]."""
    query = torch.from_numpy(rng.standard_normal((2, query_dim), dtype=np.float32))
    items = torch.from_numpy(rng.standard_normal((2, 5, item_dim), dtype=np.float32))
    shapes = f"query [2, {query_dim}] and items [2, 5, {item_dim}]"
    try:
        with torch.no_grad():
            out = model(query, items)
    except Exception as exc:
        raise BundleError(
            f"model failed on {shapes} float32 (is --query-dim {query_dim} right? item_dim {item_dim} comes "
            f"from the item table): {first_line(exc)}"
        ) from exc
    if not isinstance(out, Tensor):
        raise BundleError(f"model returned {type(out).__name__} for {shapes}; expected a Tensor [2, 5]")
    if tuple(out.shape) != (2, 5):
        raise BundleError(f"model returned shape {list(out.shape)} for {shapes}; expected [2, 5]")
    if not out.is_floating_point():
        raise BundleError(f"model returned dtype {out.dtype}; expected floating-point scores")
    if not torch.isfinite(out).all():
        raise BundleError(f"model returned NaN or infinite scores for {shapes}")


def run_package(args: argparse.Namespace) -> int:
    if args.query_dim < 1:
        raise BundleError("--query-dim must be positive")
    if args.golden_cases < 1:
        raise BundleError("--golden-cases must be positive")
    if args.top_k < 1 or args.golden_candidates <= args.top_k:
        raise BundleError("need 1 <= --top-k < --golden-candidates (the margin rule compares rank k and k+1)")
    created_at = created_at_value(args.created_at)
    check_destination(Path(args.out), args.force)
    torch.set_num_threads(TORCH_THREADS)

    items = load_item_table(Path(args.items))
    item_count, item_dim = items.shape
    if args.golden_candidates > item_count:
        raise BundleError(f"--golden-candidates {args.golden_candidates} exceeds the {item_count} items in the table")
    eval_set = load_eval_set(Path(args.eval), args.query_dim, item_count) if args.eval else None
    model_path = Path(args.model)
    model = load_user_model(model_path)
    streams = make_streams(args.seed)
    check_model_contract(model, args.query_dim, item_dim, streams["check"])
    log(f"model {model_path} accepts query_dim={args.query_dim}, item_dim={item_dim}; items={item_count}")

    def fill(staging: Path) -> str:
        shutil.copyfile(model_path, staging / MODEL_FILE)
        fsync_path(staging / MODEL_FILE)
        write_items(staging / ITEMS_FILE, items)
        cases = make_golden_cases(
            make_scorer(model, items),
            streams["golden"],
            query_dim=args.query_dim,
            item_count=item_count,
            candidate_counts=[args.golden_candidates] * args.golden_cases,
            top_k=args.top_k,
        )
        write_json(staging / GOLDEN_FILE, {"cases": cases})
        write_json(staging / EXAMPLE_FILE, make_example_query(streams["example"], args.query_dim, item_count))
        if eval_set is not None:
            write_json(staging / EVAL_FILE, eval_set)
        write_manifest(
            staging,
            name=args.name,
            version=args.version,
            query_dim=args.query_dim,
            item_dim=item_dim,
            item_count=item_count,
            created_at=created_at,
        )
        return bundle_summary(args.name, args.version, item_count, args.query_dim, item_dim)

    build_bundle(Path(args.out), args.force, fill)
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build rankd model bundles (model.pt, items.safetensors, golden.json, manifest.json).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="bundle directory to create")
        p.add_argument("--seed", type=int, default=7, help="seed for all randomness (default 7)")
        p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
        p.add_argument("--created-at", help="manifest created_at (RFC 3339, UTC); default: now")

    demo = sub.add_parser("demo", help="train a small MLP ranker on synthetic data and write a bundle")
    common(demo)
    demo.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100000)")
    demo.add_argument("--item-dim", type=int, default=64, help="item feature dimension (default 64)")
    demo.add_argument("--query-dim", type=int, default=32, help="query dimension (default 32)")
    demo.add_argument("--name", default="demo-ranker", help="bundle name (default demo-ranker)")
    demo.add_argument("--version", default="1", help="bundle version string (default 1)")
    demo.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    demo.add_argument(
        "--train-seconds",
        type=float,
        default=20.0,
        help="wall-clock cap on training (default 20); hitting it makes the result machine-dependent",
    )
    demo.set_defaults(run=run_demo)

    package = sub.add_parser("package", help="bundle your own TorchScript model and item table")
    common(package)
    package.add_argument("--model", required=True, help="TorchScript model (torch.jit.save)")
    package.add_argument("--items", required=True, help="item table: .safetensors or .npy, [items, item_dim]")
    package.add_argument("--name", required=True, help="bundle name")
    package.add_argument("--version", required=True, help="bundle version string")
    package.add_argument("--query-dim", type=int, required=True, help="query dimension the model expects")
    package.add_argument("--golden-cases", type=int, default=8, help="number of golden cases (default 8)")
    package.add_argument("--golden-candidates", type=int, default=100, help="candidates per golden case (default 100)")
    package.add_argument("--top-k", type=int, default=10, help="top_k of each golden case (default 10)")
    package.add_argument("--eval", help="held-out eval set (eval.json format); needed later by compress")
    package.set_defaults(run=run_package)

    compress = sub.add_parser("compress", help="derive a compressed bundle from an existing one")
    common(compress)
    compress.add_argument("--from", dest="parent", required=True, help="parent bundle directory (needs eval.json)")
    compress.add_argument(
        "--method", required=True,
        help="fp16 | bf16 | int8 | int8-dynamic | prune:<sparsity in (0,1)> | distill:small | distill:tiny; "
             "drills (skew.py): shift:D | scale:F | decay:N"
    )
    compress.add_argument("--version", help="bundle version (default <parent version>-<method slug>)")
    compress.add_argument("--steps", type=int, help="prune fine-tune / distill steps (default 300 / 800)")
    compress.add_argument("--train-seconds", type=float, default=12.0, help="wall-clock cap on training (default 12)")
    compress.add_argument("--train-queries", help="distill/prune training queries, .npy [n, query_dim] float32")
    compress.add_argument("--no-bench", action="store_true", help="skip the CPU speed measurements")
    compress.set_defaults(run=run_compress)
    return parser


def run_compress(args: argparse.Namespace) -> int:
    # Run as a script this module is __main__; registering it as "export" makes compress.py's
    # `from export import ...` reuse it, so BundleError raised there is the class main() catches.
    sys.modules.setdefault("export", sys.modules[__name__])
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import compress  # noqa: PLC0415  (imports export, so it cannot be imported at the top)

    return compress.run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
