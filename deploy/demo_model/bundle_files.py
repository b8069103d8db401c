"""Bundle files on disk: their names, the manifest, and the staging directory that every
export.py command assembles a bundle in before renaming it into place, so a reader never
sees half a bundle.

export.py re-exports all of this; compress.py and quantize.py import it from there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from torch import Tensor

FORMAT_VERSION = 1

MODEL_FILE = "model.pt"
ITEMS_FILE = "items.safetensors"
GOLDEN_FILE = "golden.json"
EXAMPLE_FILE = "example_query.json"
EVAL_FILE = "eval.json"
MANIFEST_FILE = "manifest.json"
ITEMS_TENSOR = "items"


class BundleError(Exception):
    """A problem the user can fix; reported as one message and exit code 2."""


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: object, indent: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_items(path: Path, items: Tensor, dtype: torch.dtype = torch.float32) -> None:
    save_file({ITEMS_TENSOR: items.to(dtype).contiguous()}, str(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # save_file creates the file 0600
    fsync_path(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def created_at_value(override: str | None) -> str:
    if override is None:
        return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        parsed = dt.datetime.fromisoformat(override)
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() != dt.timedelta(0) or "T" not in override:
        raise BundleError(f"--created-at {override!r} is not a UTC RFC 3339 timestamp like 2026-11-27T19:40:00Z")
    return override


def write_manifest(
    staging: Path,
    *,
    name: str,
    version: str,
    query_dim: int,
    item_dim: int,
    item_count: int,
    created_at: str,
    training: dict | None = None,
    precision: str = "fp32",
    extra: dict | None = None,
) -> None:
    listed = [MODEL_FILE, ITEMS_FILE, GOLDEN_FILE] + ([EVAL_FILE] if (staging / EVAL_FILE).exists() else [])
    manifest: dict = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "query_dim": query_dim,
        "item_dim": item_dim,
        "item_count": item_count,
        "precision": precision,
        "created_at": created_at,
        "files": {f: sha256_file(staging / f) for f in listed},
    }
    if training is not None:
        manifest["training"] = training
    manifest.update(extra or {})
    write_json(staging / MANIFEST_FILE, manifest, indent=2)


def check_destination(out: Path, force: bool) -> None:
    """Refuses to overwrite an existing bundle (or any non-empty directory) without --force."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise BundleError(f"{out} exists and is not a directory")
        if not force:
            if (out / MANIFEST_FILE).exists():
                raise BundleError(f"{out} already holds a bundle ({MANIFEST_FILE}); pass --force to replace it")
            if any(out.iterdir()):
                raise BundleError(f"{out} exists and is not empty; pass --force to replace it")


def prepare_staging(out: Path, force: bool) -> Path:
    """Creates the empty sibling directory DIR.tmp-<pid> that the bundle is assembled in."""
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path, force: bool) -> None:
    """Renames the finished staging directory to DIR (replacing DIR only with --force)."""
    fsync_path(staging)
    old = None
    if out.exists() and force and (out.is_symlink() or any(out.iterdir())):
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    try:
        os.replace(staging, out)  # also replaces an empty directory
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        raise BundleError(f"cannot move bundle into place at {out}: {exc}") from exc
    fsync_path(out.parent)
    if old is not None:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old)


def build_bundle(out: Path, force: bool, fill: Callable[[Path], str]) -> None:
    """Runs fill(staging) (which returns the final summary) and publishes atomically."""
    staging = prepare_staging(out, force)
    try:
        summary = fill(staging)
        publish(staging, out, force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote bundle {out} ({summary})")


def bundle_summary(name: str, version: str, item_count: int, query_dim: int, item_dim: int) -> str:
    return f"name={name}, version={version}, items={item_count}, query_dim={query_dim}, item_dim={item_dim}"
