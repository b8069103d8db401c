#!/usr/bin/env python3
"""Compression benchmark: every variant of the demo model, measured in one run.

For each variant (fp32 parent, fp16, bf16, int8 static and dynamic, pruned 50% and 80%,
distilled) this
exports the bundle with `export.py compress`, then runs `rankload bench` on it, which
starts a real rankd on loopback and measures CPU p50 latency and saturated items/s through
it. The fp32 parent is measured first and again last, so drift on a shared machine shows
up in the table instead of hiding in the ratios.

Quality figures (NDCG@10, top-10 overlap, golden agreement) come from the exporter's
report, which scores the held-out eval.json with the same definition the server's guard
uses. Writes bench-out/compression/results.json and prints the markdown table that goes
into docs/compression.md.

    make bench-compression            # or: .venv/bin/python deploy/bench/compression.py
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = [
    ("fp16", "fp16"),
    ("bf16", "bf16"),
    ("int8", "int8"),
    ("int8-dynamic", "int8dyn"),
    ("prune:0.5", "prune50"),
    ("prune:0.8", "prune80"),
    ("distill:small", "distill-small"),
]


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def bundle_bytes(d: Path) -> tuple[int, int]:
    manifest = json.loads((d / "manifest.json").read_text())
    files = ["manifest.json", *manifest["files"].keys()]
    total = sum((d / f).stat().st_size for f in files)
    return total, (d / "model.pt").stat().st_size


def bench(args: argparse.Namespace, bundle: Path, out: Path) -> dict:
    run(
        [
            str(args.rankload), "bench",
            "--bundle", str(bundle),
            "--rankd", str(args.rankd),
            "--candidates", str(args.candidates),
            "--latency-seconds", str(args.latency_seconds),
            "--throughput-seconds", str(args.throughput_seconds),
            "--machine", args.machine,
            "--out", str(out),
        ]
    )
    report = json.loads(out.read_text())
    lat = next(
        l for l in report["latency"]
        if l["side"] == "server" and l["batch"] == 1 and l["candidates"] == args.candidates
    )
    thr = next(
        t for t in report["throughput"]
        if t["side"] == "server" and t["candidates"] == args.candidates
    )
    return {"p50_us": lat["p50_us"], "p99_us": lat["p99_us"], "items_per_s": thr["items_per_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parent", type=Path, default=ROOT / "models" / "demo")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench-out" / "compression")
    p.add_argument("--rankd", type=Path, default=ROOT / "target" / "release" / "rankd")
    p.add_argument("--rankload", type=Path, default=ROOT / "target" / "release" / "rankload")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument("--throughput-seconds", type=float, default=5.0)
    p.add_argument("--machine", default=f"{platform.node()}, {platform.processor() or platform.machine()}")
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    python = sys.executable
    exporter = ROOT / "deploy" / "demo_model" / "export.py"
    parent_version = json.loads((args.parent / "manifest.json").read_text())["version"]
    bundles: list[tuple[str, Path]] = [("fp32", args.parent)]
    for method, slug in VARIANTS:
        out = args.out_dir / slug
        run([python, str(exporter), "compress", "--from", str(args.parent), "--method", method,
             "--out", str(out), "--force", "--no-bench", "--version", f"{parent_version}-{slug}"])
        bundles.append((slug, out))

    rows = []
    started = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    for slug, d in [*bundles, ("fp32 (again)", args.parent)]:
        speed = bench(args, d, args.out_dir / f"bench-{slug.replace(' ', '-').strip('()')}.json")
        manifest = json.loads((d / "manifest.json").read_text())
        report = manifest.get("report", {})
        size, model_size = bundle_bytes(d)
        rows.append({
            "variant": slug,
            "precision": manifest["precision"],
            "artifact_bytes": size,
            "model_bytes": model_size,
            "ndcg_at_10": report.get("ndcg_at_10"),
            "parent_ndcg_at_10": report.get("parent_ndcg_at_10"),
            "top10_overlap": report.get("top10_overlap"),
            "golden_agreement": report.get("golden_agreement"),
            **speed,
        })
    parent_ndcg = next((r["parent_ndcg_at_10"] for r in rows if r["parent_ndcg_at_10"]), None)
    base = rows[0]
    for r in rows:
        if r["variant"].startswith("fp32"):
            r["ndcg_at_10"], r["top10_overlap"], r["golden_agreement"] = parent_ndcg, 1.0, 1.0
        r["items_ratio"] = r["items_per_s"] / base["items_per_s"]
        r["p50_ratio"] = r["p50_us"] / base["p50_us"]
        r["size_ratio"] = base["artifact_bytes"] / r["artifact_bytes"]
        r["model_ratio"] = base["model_bytes"] / r["model_bytes"]
        r["ndcg_drop_pct"] = (
            100.0 * (parent_ndcg - r["ndcg_at_10"]) / parent_ndcg if parent_ndcg and r["ndcg_at_10"] else None
        )
    (args.out_dir / "results.json").write_text(
        json.dumps({"started": started, "machine": args.machine, "candidates": args.candidates, "rows": rows}, indent=2)
    )

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    print(f"\nmeasured {started}, {args.machine}, 1 query x {args.candidates} candidates, CPU, through rankd\n")
    print("| variant | stored | artifact MB (x smaller) | model.pt KB (x smaller) | NDCG@10 (drop) | top-10 overlap "
          "| golden agreement | CPU p50 ms (ratio) | CPU items/s (ratio) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['precision']} | {r['artifact_bytes'] / 1e6:.1f} ({r['size_ratio']:.2f}x) "
            f"| {r['model_bytes'] / 1e3:.0f} ({r['model_ratio']:.1f}x) "
            f"| {f(r['ndcg_at_10'], '.4f')} ({f(None if r['ndcg_drop_pct'] is None else -r['ndcg_drop_pct'], '+.2f')}%) | {f(r['top10_overlap'], '.3f')} "
            f"| {f(r['golden_agreement'], '.3f')} | {r['p50_us'] / 1e3:.3f} ({r['p50_ratio']:.2f}) "
            f"| {r['items_per_s']:,.0f} ({r['items_ratio']:.2f}x) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
