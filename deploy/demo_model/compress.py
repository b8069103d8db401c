"""`export.py compress`: derive a smaller or faster bundle from an existing one.

    export.py compress --from PARENT --method METHOD --out DIR [--version V] [--force]
                       [--seed N] [--steps N] [--train-seconds S] [--train-queries Q.npy]
                       [--no-bench] [--created-at T]

METHOD                 model.pt                         items.safetensors  precision
  fp16 / bf16          weights cast to that dtype       cast too           fp16 / bf16
  int8                 dynamic int8 Linear layers       fp32               int8
  prune:S              global magnitude pruning to      fp32               fp32
                       sparsity S, then fine-tuned on the parent's scores
  distill:small|tiny   MlpRanker with hidden widths     fp32               fp32
                       (128, 32) | (64, 32), trained on the parent's scores

The parent must verify (every file listed in its manifest matches its sha256) and must
carry eval.json: every figure that says how much a method costs in ranking quality is
measured on that held-out set, against the parent, as the CPU server would run both
(fp16/bf16 weights and items upcast to fp32).  The child's golden.json is recomputed from
the compressed model in that same way; eval.json and example_query.json are copied.

manifest.json gains "lineage" (parent version, sha256 of the parent's manifest.json,
method, params) and "report" (sizes, NDCG@k parent/child, top-k overlap, agreement with the
parent's golden set, CPU speed).  Byte counts cover every file in the bundle except
manifest.json, which cannot count its own size.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from quantize import int8_dynamic, int8_static
from skew import PreDecay, skew

from export import (  # noqa: I001  (export.py is the module that imports this one)
    EVAL_FILE, EXAMPLE_FILE, FORMAT_VERSION, GOLDEN_FILE, ITEMS_FILE, MANIFEST_FILE, MODEL_FILE, TORCH_THREADS,
    BundleError, MlpRanker, build_bundle, bundle_summary, check_destination, created_at_value, first_line,
    fsync_path, learning_rate, load_eval_set, load_item_table, load_user_model, log, make_example_query,
    make_golden_cases, make_scorer, make_streams, ndcg_at_k, sha256_file, standardize_per_list, warn,
    write_items, write_json, write_manifest,
)

STUDENT_WIDTHS = {"small": (128, 32), "tiny": (64, 32)}
DEFAULT_STEPS = {"prune": 300, "distill": 800}
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
METHOD_CHOICES = "fp16, bf16, int8, int8-dynamic, shift:D, scale:F, decay:N (drills), prune:<sparsity in (0,1)> (e.g. prune:0.5), distill:small, distill:tiny"
REQUIRED_FILES = (MODEL_FILE, ITEMS_FILE, GOLDEN_FILE)

# Training batch shape for prune fine-tuning and distillation (as in train_ranker).
QUERIES_PER_STEP = 64
LIST_SIZE = 64
# Speed figures: 1 query x 100 candidates for latency, 32 x 100 batches for throughput.
BENCH_CANDIDATES = 100
BENCH_BATCH = 32
BENCH_SECONDS = 1.0


@dataclass
class Method:
    kind: str  # fp16 | bf16 | int8 | prune | distill
    slug: str
    sparsity: float | None = None
    student: str | None = None
    value: float | None = None  # shift: / scale: / decay: (drill transforms, skew.py)


def parse_method(text: str) -> Method:
    if text in HALF_DTYPES or text == "int8":
        return Method(kind=text, slug=text)
    if text == "int8-dynamic":
        return Method(kind="int8", slug="int8dyn")
    if text.startswith(("shift:", "scale:")):
        kind, _, raw = text.partition(":")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (kind == "scale" and value <= 0):
            raise BundleError(f"--method {text!r}: needs a finite number (a positive one for scale:)")
        return Method(kind=kind, slug=f"{kind}{raw}", value=value)
    if text.startswith("decay:"):
        raw = text.partition(":")[2]
        if not raw.isdecimal() or int(raw) < 1:
            raise BundleError(f"--method {text!r}: needs a positive whole number of forward calls after decay:")
        return Method(kind="decay", slug=f"decay{int(raw)}", value=float(int(raw)))
    if text.startswith("prune:"):
        try:
            sparsity = float(text.split(":", 1)[1])
        except ValueError:
            sparsity = math.nan
        if not 0.0 < sparsity < 1.0:
            raise BundleError(f"--method {text!r}: the sparsity after prune: must be a number in (0, 1)")
        return Method(kind="prune", slug=f"prune{round(sparsity * 100)}", sparsity=sparsity)
    if text.startswith("distill:") and text.split(":", 1)[1] in STUDENT_WIDTHS:
        student = text.split(":", 1)[1]
        return Method(kind="distill", slug=f"distill-{student}", student=student)
    raise BundleError(f"unknown --method {text!r}; choose one of {METHOD_CHOICES}")


# --------------------------------------------------------------------------------------
# Parent bundle
# --------------------------------------------------------------------------------------


@dataclass
class Parent:
    dir: Path
    manifest: dict
    manifest_sha256: str
    model: torch.jit.ScriptModule  # as the CPU server runs it: fp32 weights
    items: Tensor  # fp32
    golden: list[dict]
    eval_set: dict
    artifact_bytes: int
    model_bytes: int


def bundle_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)


def open_parent(directory: Path) -> Parent:
    """Checks the parent the way the server's Bundle::open does, then loads it for scoring."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{directory} is not a bundle (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {manifest_path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version must be {FORMAT_VERSION}")
    for key in ("name", "version", "precision"):
        if not isinstance(manifest.get(key), str) or not manifest[key].strip():
            raise BundleError(f"{manifest_path}: {key} must be a non-empty string")
    for key in ("query_dim", "item_dim", "item_count"):
        if not isinstance(manifest.get(key), int) or manifest[key] < 1:
            raise BundleError(f"{manifest_path}: {key} must be a positive integer")
    files = manifest.get("files")
    if not isinstance(files, dict) or any(f not in files for f in REQUIRED_FILES):
        raise BundleError(f"{manifest_path}: files must list the sha256 of {', '.join(REQUIRED_FILES)}")
    for name, expected in files.items():
        if "/" in name or ".." in name:
            raise BundleError(f"{manifest_path}: files: {name!r} is not a plain file name")
        if not (directory / name).is_file():
            raise BundleError(f"{directory / name} is listed in the manifest but missing")
        if sha256_file(directory / name).lower() != str(expected).lower():
            raise BundleError(f"{directory / name} does not match its sha256 in the manifest (changed or damaged)")
    if not (directory / EVAL_FILE).is_file():
        raise BundleError(
            f"{directory} has no {EVAL_FILE}: compression needs a held-out evaluation set to measure what it "
            f"costs in ranking quality. Rebuild the parent with `export.py package ... --eval FILE` "
            f'(format {{"k": 10, "queries": [{{"query": [...], "candidates": [...], "labels": [...]}}]}}), '
            "or re-run `export.py demo`, which writes one"
        )

    query_dim, item_count = manifest["query_dim"], manifest["item_count"]
    items = load_item_table(directory / ITEMS_FILE)
    if list(items.shape) != [item_count, manifest["item_dim"]]:
        raise BundleError(
            f"{directory / ITEMS_FILE} holds {list(items.shape)} but the manifest says "
            f"[{item_count}, {manifest['item_dim']}]"
        )
    model = load_user_model(directory / MODEL_FILE)
    if manifest["precision"] in HALF_DTYPES:
        model.float()  # what the CPU server does before serving a half-precision bundle
    try:
        golden = json.loads((directory / GOLDEN_FILE).read_text(encoding="utf-8"))["cases"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read the golden cases in {directory / GOLDEN_FILE}: {exc}") from exc
    eval_set = load_eval_set(directory / EVAL_FILE, query_dim, item_count)
    return Parent(directory, manifest, sha256_file(manifest_path), model, items, golden, eval_set,
                  bundle_bytes(directory), (directory / MODEL_FILE).stat().st_size)


# --------------------------------------------------------------------------------------
# Scoring and quality figures
# --------------------------------------------------------------------------------------


def score_eval_set(model: nn.Module, items: Tensor, eval_set: dict) -> list[np.ndarray]:
    """Scores per eval query; lists of equal length are batched together."""
    entries = eval_set["queries"]
    out: list[np.ndarray] = [np.empty(0)] * len(entries)
    by_len: dict[int, list[int]] = {}
    for n, e in enumerate(entries):
        by_len.setdefault(len(e["candidates"]), []).append(n)
    with torch.no_grad():
        for rows in by_len.values():
            for start in range(0, len(rows), 50):
                chunk = rows[start : start + 50]
                query = torch.tensor([entries[n]["query"] for n in chunk], dtype=torch.float32)
                ids = torch.tensor([entries[n]["candidates"] for n in chunk], dtype=torch.int64)
                scores = model(query, items[ids]).to(torch.float32).numpy()
                for n, s in zip(chunk, scores):
                    out[n] = s
    return out


def eval_ndcg(scores: list[np.ndarray], eval_set: dict) -> float:
    k, entries = eval_set["k"], eval_set["queries"]
    per_query = [ndcg_at_k(s[None, :], np.asarray(e["labels"])[None, :], k) for s, e in zip(scores, entries)]
    return float(np.mean(per_query))


def top_k_overlap(child: list[np.ndarray], parent: list[np.ndarray], k: int) -> float:
    def top(s: np.ndarray) -> set[int]:
        return set(np.argsort(-s, kind="stable")[:k].tolist())

    return float(np.mean([len(top(c) & top(p)) / k for c, p in zip(child, parent)]))


def golden_agreement(model: nn.Module, items: Tensor, cases: list[dict]) -> float:
    """Share of the parent's golden top-k ids that the child also puts in its top-k."""
    score = make_scorer(model, items)
    shares = []
    for case in cases:
        ids = np.asarray(case["candidates"], dtype=np.int64)
        s = score(np.asarray(case["query"], dtype=np.float32), ids)
        top = set(ids[np.argsort(-s, kind="stable")[: case["top_k"]]].tolist())
        shares.append(len(top & set(case["expected_ids"])) / case["top_k"])
    return float(np.mean(shares))


def bench(model: nn.Module, items: Tensor, query_dim: int, rng: np.random.Generator) -> tuple[float, float]:
    """(p50 ms of 1 x 100 forward, items/s of 32 x 100 batches), TORCH_THREADS threads."""
    ids = torch.from_numpy(rng.integers(0, items.shape[0], size=(BENCH_BATCH, BENCH_CANDIDATES)))
    batch_items = items[ids].contiguous()
    batch_query = torch.from_numpy(rng.standard_normal((BENCH_BATCH, query_dim), dtype=np.float32))
    one_items, one_query = batch_items[:1].contiguous(), batch_query[:1].contiguous()
    with torch.no_grad():
        for _ in range(20):  # TorchScript profiles and optimises the first calls
            model(one_query, one_items)
            model(batch_query, batch_items)
        times = []
        end = time.perf_counter() + BENCH_SECONDS
        while time.perf_counter() < end and len(times) < 5000:
            t0 = time.perf_counter()
            model(one_query, one_items)
            times.append(time.perf_counter() - t0)
        batches, t0 = 0, time.perf_counter()
        while batches == 0 or time.perf_counter() - t0 < BENCH_SECONDS:
            model(batch_query, batch_items)
            batches += 1
        items_per_s = batches * BENCH_BATCH * BENCH_CANDIDATES / (time.perf_counter() - t0)
    return float(np.median(times) * 1e3), float(items_per_s)


# --------------------------------------------------------------------------------------
# Training against the parent (prune fine-tune, distillation)
# --------------------------------------------------------------------------------------

QuerySampler = Callable[[int], Tensor]


def query_sampler(args: argparse.Namespace, parent: Parent, rng: np.random.Generator) -> tuple[QuerySampler, str]:
    """Training queries; never eval.json's, which must stay unseen to measure the result."""
    query_dim = parent.manifest["query_dim"]
    if args.train_queries:
        path = Path(args.train_queries)
        try:
            table = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise BundleError(f"cannot read --train-queries {path}: {first_line(exc)}") from exc
        if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] != query_dim:
            raise BundleError(f"--train-queries {path} must be [n, {query_dim}], got {list(table.shape)}")
        table = table.astype(np.float32)
        if not np.all(np.isfinite(table)):
            raise BundleError(f"--train-queries {path} contains NaN or infinite values")
        return (lambda n: torch.from_numpy(table[rng.integers(0, len(table), size=n)])), f"{path.name} ({len(table)} rows)"
    queries = np.asarray([c["query"] for c in parent.golden], dtype=np.float64)
    if queries.shape[0] < 2:
        raise BundleError("the parent's golden set has fewer than 2 queries to fit a query distribution to; pass --train-queries")
    mean, std = shrunk_normal_fit(queries)

    def sample(n: int) -> Tensor:
        return torch.from_numpy((mean + std * rng.standard_normal((n, query_dim))).astype(np.float32))

    return sample, f"normal fitted per dimension (shrunk) to the parent's {len(queries)} golden queries"


def shrunk_normal_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of x [n, d], each shrunk toward its average over dimensions.

    A golden set has only ~8 queries, so raw per-dimension estimates are noisy (std off by
    ~25%), and distilling on that noise cost about a point of NDCG@10 in trials.  The weight
    on the per-dimension value is the share of the spread across dimensions that sampling
    noise does not explain (James-Stein style): 0 when the dimensions look alike, -> 1 as the
    set grows or the dimensions really differ.
    """
    n = x.shape[0]
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)

    def shrink(est: np.ndarray, noise_var: float) -> np.ndarray:
        spread = float(est.var())
        w = 0.0 if spread <= 0 else max(0.0, 1.0 - noise_var / spread)
        return est.mean() + w * (est - est.mean())

    pooled_var = float(np.mean(std**2))
    return shrink(mean, pooled_var / n), shrink(std, pooled_var / (2 * (n - 1)))


def train_on_teacher(
    student: nn.Module, teacher: nn.Module, items: Tensor, sample_queries: QuerySampler, rng: np.random.Generator,
    *, max_steps: int, max_seconds: float, peak_lr: float, standardize: bool,
    masks: dict[str, Tensor] | None = None, log_every_s: float = 3.0,
) -> dict:
    """MSE between student and teacher scores on random lists from the whole item table."""
    params = dict(student.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=peak_lr)
    student.train()
    start = time.monotonic()
    next_log = start + log_every_s
    window, window_steps, loss_value, step, stopped_by = 0.0, 0, float("nan"), 0, "steps"
    while step < max_steps:
        if time.monotonic() - start >= max_seconds:
            stopped_by = "time"
            break
        query = sample_queries(QUERIES_PER_STEP)
        ids = torch.from_numpy(rng.integers(0, items.shape[0], size=(QUERIES_PER_STEP, LIST_SIZE)))
        batch = items[ids]
        with torch.no_grad():
            target = teacher(query, batch).to(torch.float32)
            if standardize:
                target = standardize_per_list(target)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, max_steps, peak_lr)
        loss = nn.functional.mse_loss(student(query, batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if masks:
            # Adam moves zeroed weights again (its momentum is not masked); re-zeroing after
            # every step keeps the sparsity pattern fixed.
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)
        step += 1
        loss_value = loss.item()
        window, window_steps = window + loss_value, window_steps + 1
        now = time.monotonic()
        if now >= next_log:
            log(f"  step {step:5d}/{max_steps}  loss {window / window_steps:.4f}  ({now - start:.1f}s)")
            window, window_steps, next_log = 0.0, 0, now + log_every_s
    student.eval()
    seconds = time.monotonic() - start
    log(f"  trained {step} steps in {seconds:.1f}s, last loss {loss_value:.4f}")
    if stopped_by == "time":
        warn(f"--train-seconds {max_seconds:g} stopped training after {step} of {max_steps} steps; "
             "this bundle is not reproducible from the seed alone (--steps fewer or --train-seconds more)")
    # No wall-clock figures here: they end up in the manifest, which should be reproducible.
    return {"steps": step, "max_steps": max_steps, "stopped_by": stopped_by,
            "final_loss": round(loss_value, 5) if math.isfinite(loss_value) else None}


# --------------------------------------------------------------------------------------
# Methods.  Each returns (model to save, dtype to store the items in, lineage params).
# --------------------------------------------------------------------------------------

Compressed = tuple[nn.Module, torch.dtype, dict]


def compress_half(parent: Parent, method: Method) -> Compressed:
    model = load_user_model(parent.dir / MODEL_FILE)
    model.to(HALF_DTYPES[method.kind])
    return model, HALF_DTYPES[method.kind], {"dtype": method.kind, "items_dtype": method.kind}


def mlp_widths(state: dict[str, Tensor], query_dim: int, item_dim: int) -> tuple[int, ...] | None:
    """Hidden widths if state is exactly an export.py MlpRanker's state_dict, else None."""
    parts = [k.split(".") for k in state]
    if not parts or any(len(x) != 3 or x[0] != "mlp" or not x[1].isdigit() for x in parts):
        return None
    keys = sorted(state, key=lambda k: (int(k.split(".")[1]), k))
    widths = tuple(int(state[k].shape[0]) for k in keys if k.endswith(".weight"))
    if not widths or widths[-1] != 1:
        return None
    candidate = MlpRanker(query_dim, item_dim, widths[:-1])
    ref = candidate.state_dict()
    if set(ref) != set(state) or any(ref[k].shape != state[k].shape for k in ref):
        return None
    return widths[:-1]


def eager_copy(parent: Parent) -> MlpRanker | None:
    """The parent rebuilt as an eager MlpRanker (fp32), or None if it is some other model.

    Eager training steps run about 1.5x faster than through a loaded ScriptModule, which
    matters with a 2-core, ~15 s budget; the result is scripted again afterwards.
    """
    q_dim, i_dim = parent.manifest["query_dim"], parent.manifest["item_dim"]
    state = {k: v.detach().to(torch.float32) for k, v in parent.model.state_dict().items()}
    widths = mlp_widths(state, q_dim, i_dim)
    if widths is None or not all(v.is_floating_point() for v in state.values()):
        return None
    model = MlpRanker(q_dim, i_dim, widths)
    model.load_state_dict(state)
    model.eval()
    # Same weight names and shapes do not prove the same forward(); compare outputs.
    query = torch.randn(4, q_dim, generator=torch.Generator().manual_seed(0))
    items = parent.items[:200].reshape(4, 50, i_dim)
    with torch.no_grad():
        if not torch.allclose(model(query, items), parent.model(query, items).float(), atol=1e-4, rtol=1e-4):
            return None
    return model


def compress_int8(parent: Parent, method: Method, args: argparse.Namespace, rng: np.random.Generator) -> Compressed:
    eager = eager_copy(parent)
    if method.slug == "int8":
        sample, source = query_sampler(args, parent, rng)
        model, params = int8_static(eager, parent.items, sample, rng)
        params["calibration_queries"] = source
    else:
        model, params = int8_dynamic(eager, parent.dir)
    return model, torch.float32, params


def compress_prune(parent: Parent, method: Method, args: argparse.Namespace, rng: np.random.Generator) -> Compressed:
    assert method.sparsity is not None
    eager = eager_copy(parent)
    student: nn.Module = eager if eager is not None else load_user_model(parent.dir / MODEL_FILE)
    if eager is None and parent.manifest["precision"] in HALF_DTYPES:
        student.float()
    # Weight matrices only: biases are few and pruning them saves nothing worth the damage.
    weights = {n: p for n, p in student.named_parameters() if p.is_floating_point() and p.dim() >= 2}
    if not weights:
        raise BundleError("prune: the parent has no floating-point weight tensors with >= 2 dims")
    magnitudes = torch.cat([p.detach().abs().flatten() for p in weights.values()])
    n_prune = int(round(method.sparsity * magnitudes.numel()))
    # Exactly n_prune smallest weights across all layers (global, not per layer): a stable
    # sort instead of a threshold so ties cannot push the count over or under.
    keep = torch.ones(magnitudes.numel())
    keep[torch.sort(magnitudes, stable=True).indices[:n_prune]] = 0.0
    masks, offset = {}, 0
    for name, p in weights.items():
        masks[name] = keep[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    with torch.no_grad():
        for name, p in weights.items():
            p.mul_(masks[name])
    steps = DEFAULT_STEPS["prune"] if args.steps is None else args.steps
    training: dict = {"steps": 0, "max_steps": 0}
    if steps > 0:
        sample, source = query_sampler(args, parent, rng)
        log(f"fine-tuning pruned model on the parent's scores: up to {steps} steps or {args.train_seconds:g}s; queries: {source}")
        # Raw teacher scores, not standardized: the student starts as the teacher, and its
        # score scale (which golden margins and tolerances assume) should stay the same.
        training = train_on_teacher(student, eager_copy(parent) or parent.model, parent.items, sample, rng, max_steps=steps,
                                    max_seconds=args.train_seconds, peak_lr=1e-3, standardize=False, masks=masks)
        training["train_queries"] = source
    zeros = sum(int((p.detach() == 0).sum()) for p in weights.values())
    for p in student.parameters():
        p.requires_grad_(False)
    scripted = torch.jit.script(student.eval()) if eager is not None else student
    return scripted, torch.float32, {
        "sparsity": method.sparsity, "achieved_sparsity": round(zeros / magnitudes.numel(), 5),
        "pruned_tensors": sorted(weights), "scope": "global magnitude, unstructured, weights with >= 2 dims",
        "finetune_steps": training["steps"], "finetune": training, "seed": args.seed}


def compress_distill(parent: Parent, method: Method, args: argparse.Namespace, rng: np.random.Generator) -> Compressed:
    assert method.student is not None
    widths = STUDENT_WIDTHS[method.student]
    q_dim, i_dim = parent.manifest["query_dim"], parent.manifest["item_dim"]
    torch.manual_seed(args.seed)
    student = MlpRanker(q_dim, i_dim, widths)
    steps = DEFAULT_STEPS["distill"] if args.steps is None else args.steps
    if steps < 1:
        raise BundleError("distill needs --steps >= 1")
    sample, source = query_sampler(args, parent, rng)
    log(f"distilling into MlpRanker{widths}: up to {steps} steps or {args.train_seconds:g}s, {TORCH_THREADS} threads; queries: {source}")
    training = train_on_teacher(student, eager_copy(parent) or parent.model, parent.items, sample, rng, max_steps=steps,
                                max_seconds=args.train_seconds, peak_lr=5e-3, standardize=True)
    training.update(train_queries=source, loss="mse vs the parent's per-list standardized scores")
    return torch.jit.script(student.eval()), torch.float32, {
        "student": method.student, "hidden": list(widths), "steps": training["steps"], "seed": args.seed,
        "training": training}


# --------------------------------------------------------------------------------------
# compress
# --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    method = parse_method(args.method)
    created_at = created_at_value(args.created_at)
    if args.train_seconds <= 0 or (args.steps is not None and args.steps < 0):
        raise BundleError("--train-seconds must be positive and --steps >= 0")
    out = Path(args.out)
    check_destination(out, args.force)
    torch.set_num_threads(TORCH_THREADS)
    # Quantized CPU kernels resize their outputs, which torch flags as "not deterministic"
    # although it is on the CPU; static int8 would fail under the strict setting.
    torch.use_deterministic_algorithms(True, warn_only=method.slug == "int8")
    total_start = time.monotonic()

    parent_dir = Path(args.parent)
    if out.resolve() == parent_dir.resolve():
        raise BundleError("--out must differ from --from (the parent is read while the child is written)")
    parent = open_parent(parent_dir)
    pm = parent.manifest
    if pm["precision"] == "int8" and method.kind != "distill":
        raise BundleError(f"the parent is already int8; only distill can start from it (got {args.method})")
    version = args.version or f"{pm['version']}-{method.slug}"
    streams = make_streams(args.seed)
    log(f"compressing {pm['name']} {pm['version']} ({pm['precision']}) with {args.method} -> version {version}")

    if method.kind in HALF_DTYPES:
        model, items_dtype, params = compress_half(parent, method)
    elif method.kind == "int8":
        model, items_dtype, params = compress_int8(parent, method, args, streams["train"])
    elif method.kind == "prune":
        model, items_dtype, params = compress_prune(parent, method, args, streams["train"])
    elif method.kind in ("shift", "scale", "decay"):
        assert method.value is not None
        model, params = skew(parent.model, method.kind, method.value)
        items_dtype = torch.float32
        # rankd's load: 9 warmup calls (3 shapes x 3 iterations by default), one per golden
        # case, one batched; a model that decays before then is never served at all.
        load_calls = 9 + len(parent.golden) + 1
        if method.kind == "decay" and method.value < load_calls:
            warn(f"decay:{method.value:.0f} decays during rankd's load ({load_calls} forward calls with the "
                 "default warmup), which then fails the golden set; use a larger N (e.g. 200)")
    else:
        model, items_dtype, params = compress_distill(parent, method, args, streams["train"])
    precision = method.kind if method.kind in ("fp16", "bf16", "int8") else "fp32"
    # What the server serves: the stored table, upcast to fp32.
    serve_items = parent.items.to(items_dtype).to(torch.float32)

    def fill(staging: Path) -> str:
        torch.jit.save(model, str(staging / MODEL_FILE))
        fsync_path(staging / MODEL_FILE)
        # Everything below scores the saved file, reloaded as the CPU server runs it.
        child = load_user_model(staging / MODEL_FILE)
        if precision in HALF_DTYPES:
            child.float()
        # decay:N reverses its ranking after N forward calls, and the figures and golden set
        # below take dozens (N may be 1); they must describe what rankd's load validates, the
        # pre-decay model. The benchmark times the child as served, decay included.
        scored = PreDecay(child) if method.kind == "decay" else child
        write_items(staging / ITEMS_FILE, parent.items, items_dtype)

        k = parent.eval_set["k"]
        parent_scores = score_eval_set(parent.model, parent.items, parent.eval_set)
        child_scores = score_eval_set(scored, serve_items, parent.eval_set)
        if not all(np.all(np.isfinite(s)) for s in child_scores):
            raise BundleError("the compressed model produced NaN/inf scores on the eval set")
        parent_ndcg, child_ndcg = eval_ndcg(parent_scores, parent.eval_set), eval_ndcg(child_scores, parent.eval_set)
        overlap = top_k_overlap(child_scores, parent_scores, k)
        agreement = golden_agreement(scored, serve_items, parent.golden)

        top_ks = {c["top_k"] for c in parent.golden}
        cases = make_golden_cases(
            make_scorer(scored, serve_items), streams["golden"], query_dim=pm["query_dim"], item_count=pm["item_count"],
            candidate_counts=[len(c["candidates"]) for c in parent.golden],
            top_k=top_ks.pop() if len(top_ks) == 1 else 10,
        )
        write_json(staging / GOLDEN_FILE, {"cases": cases})
        shutil.copyfile(parent.dir / EVAL_FILE, staging / EVAL_FILE)
        if (parent.dir / EXAMPLE_FILE).is_file():
            shutil.copyfile(parent.dir / EXAMPLE_FILE, staging / EXAMPLE_FILE)
        else:
            write_json(staging / EXAMPLE_FILE, make_example_query(streams["example"], pm["query_dim"], pm["item_count"]))

        speed: dict = {"cpu_p50_ms": None, "cpu_items_per_s": None,
                       "parent_cpu_p50_ms": None, "parent_cpu_items_per_s": None}
        if not args.no_bench:
            log(f"benchmarking on CPU ({TORCH_THREADS} threads, about {4 * BENCH_SECONDS:g}s)")
            p50, ips = bench(child, serve_items, pm["query_dim"], streams["check"])
            pp50, pips = bench(parent.model, parent.items, pm["query_dim"], make_streams(args.seed)["check"])
            speed = {"cpu_p50_ms": round(p50, 4), "cpu_items_per_s": round(ips),
                     "parent_cpu_p50_ms": round(pp50, 4), "parent_cpu_items_per_s": round(pips)}
        drop_pct = 100.0 * (parent_ndcg - child_ndcg) / parent_ndcg if parent_ndcg > 0 else 0.0
        report = {
            "artifact_bytes": bundle_bytes(staging),
            "model_bytes": (staging / MODEL_FILE).stat().st_size,
            "parent_artifact_bytes": parent.artifact_bytes,
            "parent_model_bytes": parent.model_bytes,
            f"ndcg_at_{k}": round(child_ndcg, 5),
            f"parent_ndcg_at_{k}": round(parent_ndcg, 5),
            "ndcg_rel_drop_pct": round(drop_pct, 3),
            f"top{k}_overlap": round(overlap, 4),
            "golden_agreement": round(agreement, 4),
            **speed,
            "bench_threads": TORCH_THREADS,
            "eval": f"{len(parent.eval_set['queries'])} queries from the parent's {EVAL_FILE}, k={k}",
            "torch_version": torch.__version__,
        }
        lineage = {"parent": pm["version"], "parent_manifest_sha256": parent.manifest_sha256,
                   "method": method.kind, "params": params}
        write_manifest(staging, name=pm["name"], version=version, query_dim=pm["query_dim"], item_dim=pm["item_dim"],
                       item_count=pm["item_count"], created_at=created_at, precision=precision,
                       extra={"lineage": lineage, "report": report,
                              # rankd batches int8 requests together only when the activation
                              # scales are static; a dynamic model ranks each request alone.
                              **({"quantization": params["scheme"]} if precision == "int8" else {})})

        log(f"size: bundle {parent.artifact_bytes / 1e6:.2f} MB -> {report['artifact_bytes'] / 1e6:.2f} MB, "
            f"model.pt {parent.model_bytes / 1e3:.1f} kB -> {report['model_bytes'] / 1e3:.1f} kB")
        log(f"NDCG@{k}: {parent_ndcg:.4f} -> {child_ndcg:.4f} ({-drop_pct:+.2f}%), top-{k} overlap {overlap:.3f}, "
            f"golden agreement {agreement:.3f}")
        if speed["cpu_p50_ms"] is not None:
            log(f"CPU ({TORCH_THREADS} threads): p50 1x{BENCH_CANDIDATES} {speed['parent_cpu_p50_ms']:.3f} -> "
                f"{speed['cpu_p50_ms']:.3f} ms, {speed['parent_cpu_items_per_s']:,} -> {speed['cpu_items_per_s']:,} items/s")
        return bundle_summary(pm["name"], version, pm["item_count"], pm["query_dim"], pm["item_dim"]) + f", {precision}"

    build_bundle(out, args.force, fill)
    log(f"done in {time.monotonic() - total_start:.1f}s")
    return 0
