#!/usr/bin/env python3
"""`make validate-deploy`: checks every deployment asset without a container engine or a
Kubernetes cluster, and proves each check rejects a bad input (deploy/**/testdata).

- Kubernetes: renders each kustomize overlay (and the base) with kustomize itself (the Go
  library inside the pykustomize wheel), validates every object against the Kubernetes
  OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields are errors; a kind
  without a schema is an error), for the oldest and newest Kubernetes versions listed in
  K8S_VERSIONS, then checks what rankd itself needs (service links off, probes, grace
  period, non-root, read-only root filesystem, GPU requests in the CUDA overlay).
- Compose: the Compose Specification JSON schema (bundled in check-jsonschema), then
  cross-references (depends_on, volumes, secrets, networks, files on disk) and the init
  service's member list against the nodes' advertised addresses.
- rankd configs (compose, Kubernetes, the image default) with the RANKD_* overrides each
  node gets: `rankd --check-config`, when a rankd binary is at hand (RANKD, or
  target/debug/rankd, or target/release/rankd); skipped otherwise.
- Prometheus config: `promtool check config`.
- Grafana dashboard: the JSON parses, panel ids and layout are sane, and every query is
  valid PromQL (promtool, with the dashboard variables substituted).
- Metric names used by the rules and the dashboard exist in docs/operations.md.
- Dockerfile: parsed with BuildKit's parser (the dockerfile wheel); known instructions,
  COPY --from stages, COPY sources present in the context and not ignored, RUN shell syntax
  (sh -n). No image is built.

Ends with one line `validate-deploy: N passed, M failed, K skipped`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

import yaml

from dockerfile_lint import dockerfile_errors, shown

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose"
GRAFANA = DEPLOY / "grafana"
PROM = DEPLOY / "prometheus"
DOCKER = DEPLOY / "docker"

# Oldest (gRPC probes are GA from 1.27; 1.28 is the oldest schema set kept here) and newest.
K8S_VERSIONS = ["1.28.0", "1.37.0"]

# Series the dashboard shows before rankd exports them (say so in the panel description).
NOT_YET_EXPORTED: set[str] = set()


class Failure(Exception):
    pass


class Skip(Exception):
    pass


RESULTS: list[tuple[str, str]] = []


def check(name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Skip as e:
        RESULTS.append((name, "skip"))
        print(f"skip  {name}: {e}")
    except Failure as e:
        RESULTS.append((name, "fail"))
        print(f"FAIL  {name}:\n      " + str(e).replace("\n", "\n      "))
    except Exception as e:  # a crash in a check is a failure of that check
        RESULTS.append((name, "fail"))
        print(f"FAIL  {name}: {type(e).__name__}: {e}")
    else:
        RESULTS.append((name, "ok"))
        print(f"ok    {name}")


def expect_rejected(what: str, errors: list[str]) -> None:
    """A negative test: `errors` are what the check found in a deliberately bad input."""
    if not errors:
        raise Failure(f"{what} was accepted, but it is deliberately invalid")


def rel(p: Path) -> str:
    return shown(p, ROOT)


# --- Kubernetes ------------------------------------------------------------------------


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    import pykustomize  # type: ignore[import-untyped]

    try:
        result = asyncio.run(pykustomize.build(str(path)))
    except Exception as e:
        raise Failure(f"kustomize build {rel(path)}: {e}") from e
    return [d for d in yaml.safe_load_all(result.yaml) if d is not None]


def schema_errors(docs: list[dict[str, Any]], source: str) -> list[str]:
    import kubernetes_validate  # type: ignore[import-untyped]

    errors = []
    if not docs:
        errors.append(f"{source}: no objects")
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            errors.append(f"{source}: not a Kubernetes object: {str(doc)[:80]}")
            continue
        name = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{source} {name} (Kubernetes {version}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{source} {name} (Kubernetes {version}): no schema: {e}")
            except Exception as e:
                errors.append(f"{source} {name} (Kubernetes {version}): {type(e).__name__}: {e}")
    return errors


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for d in docs:
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise Failure(f"no {kind} {name or ''} in the rendered output")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("StatefulSet", "Deployment", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append(
                (f"CronJob/{d['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"])
            )
    return out


def rankd_toml(docs: list[dict[str, Any]]) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("rankd-config"):
            return tomllib.loads(d["data"]["rankd.toml"])
    raise Failure("no rankd-config ConfigMap")


def rankd_invariants(docs: list[dict[str, Any]], gpu: bool) -> list[str]:
    """What rankd needs from its manifests, beyond the schema."""
    errors = []
    sts = find(docs, "StatefulSet", "rankd")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    cfg = rankd_toml(docs)
    server = cfg.get("server", {})
    drain_s = (server.get("drain_delay_ms", 1000) + server.get("shutdown_grace_ms", 10000)) / 1000
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain_s:
        errors.append(
            f"terminationGracePeriodSeconds {grace} must exceed drain_delay_ms + shutdown_grace_ms ({drain_s:g} s)"
        )
    if spec.get("podManagementPolicy") != "Parallel":
        errors.append("podManagementPolicy must be Parallel (no pod is ready before the cluster is formed)")
    for what, ps in pod_specs(docs):
        if ps.get("enableServiceLinks") is not False:
            errors.append(f"{what}: enableServiceLinks must be false (RANKD_* service variables break rankd's config)")
        if ps.get("securityContext", {}).get("runAsNonRoot") is not True:
            errors.append(f"{what}: securityContext.runAsNonRoot must be true")
        for c in ps.get("initContainers", []) + ps.get("containers", []):
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{what} container {c['name']}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{what} container {c['name']}: allowPrivilegeEscalation must be false")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                errors.append(f"{what} container {c['name']}: no memory limit")
    rankd = next((c for c in pod["containers"] if c["name"] == "rankd"), None)
    if rankd is None:
        return errors + ["StatefulSet rankd has no container named rankd"]
    ready = rankd.get("readinessProbe", {}).get("grpc")
    # The kubelet's gRPC probe cannot speak TLS: probes go to the plaintext health port.
    if not ready or ready.get("port") != 50081 or ready.get("service") not in ("", "rankd.v1.Ranker"):
        errors.append("the readiness probe must be a gRPC health probe on the health port 50081 (service rankd.v1.Ranker)")
    if not rankd.get("livenessProbe"):
        errors.append("the rankd container has no liveness probe")
    mounts = {m["mountPath"] for m in rankd.get("volumeMounts", [])}
    for need in ("/var/lib/rankd", "/tmp"):
        if need not in mounts:
            errors.append(f"nothing is mounted at {need} (the root filesystem is read-only)")
    if not any(t["metadata"]["name"] == "data" for t in spec.get("volumeClaimTemplates", [])):
        errors.append("no volumeClaimTemplate named data")
    headless = find(docs, "Service", spec["serviceName"])
    if headless["spec"].get("clusterIP") != "None" or not headless["spec"].get("publishNotReadyAddresses"):
        errors.append(f"Service {spec['serviceName']} must be headless with publishNotReadyAddresses")
    pdb = find(docs, "PodDisruptionBudget")
    if pdb["spec"].get("maxUnavailable") != 1:
        errors.append("the PodDisruptionBudget must allow at most one node down")
    errors += init_member_errors(docs)
    limits = rankd.get("resources", {}).get("limits", {})
    has_gpu = str(limits.get("nvidia.com/gpu", "")) == "1"
    if gpu and not has_gpu:
        errors.append("the CUDA overlay must request nvidia.com/gpu: 1")
    if not gpu and has_gpu:
        errors.append("a CPU overlay must not request a GPU")
    return errors


def expand_k8s_env(env: list[dict[str, Any]], fields: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: fieldRefs from `fields`,
    $(VAR) references to earlier variables expanded."""
    out: dict[str, str] = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m.group(1), m.group(0)), e["value"]
            )
        elif "fieldRef" in e.get("valueFrom", {}):
            out[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


def statefulset_pod_env(docs: list[dict[str, Any]], ordinal: int) -> dict[str, str]:
    """The RANKD_* environment pod `ordinal` runs rankd with, including the cluster id its
    start command derives (the command's own shell runs, with a stub for rankd)."""
    sts = find(docs, "StatefulSet", "rankd")
    rankd = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "rankd")
    pod_name = f"{sts['metadata']['name']}-{ordinal}"
    env = expand_k8s_env(
        rankd.get("env", []),
        {"metadata.name": pod_name, "metadata.namespace": sts["metadata"].get("namespace", "default")},
    )
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "rankd"
        stub.write_text('#!/bin/sh\nenv | grep "^RANKD_"\n')
        stub.chmod(0o755)
        cmd = rankd.get("command", []) + rankd.get("args", [])
        run_env = {"PATH": f"{tmp}:/usr/bin:/bin", **env}
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise Failure(f"the rankd container's command failed under sh: {out.stderr.strip()}")
    for line in out.stdout.splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    return {k: v for k, v in env.items() if k.startswith("RANKD_")}


def init_member_errors(docs: list[dict[str, Any]]) -> list[str]:
    """The init Job must name each pod with the id and addresses the pod advertises."""
    sts = find(docs, "StatefulSet", "rankd")
    job = find(docs, "Job", "rankd-init")
    container = job["spec"]["template"]["spec"]["containers"][0]
    ns = job["metadata"].get("namespace", "default")
    members = expand_k8s_env(container.get("env", []), {"metadata.namespace": ns}).get("INIT_MEMBERS", "").split()
    expected = []
    for ordinal in range(sts["spec"].get("replicas", 1)):
        env = statefulset_pod_env(docs, ordinal)
        expected.append(
            f"{env.get('RANKD_CLUSTER__ID')}={env.get('RANKD_CLUSTER__ADVERTISE_API')},{env.get('RANKD_CLUSTER__ADVERTISE_PEER')}"
        )
    if members != expected:
        return [f"the rankd-init Job's INIT_MEMBERS {members} differ from what the pods advertise {expected}"]
    return []


def compose_member_errors(path: Path) -> list[str]:
    """compose's rankd-init must name each node with the id and addresses it advertises."""
    doc = yaml.safe_load(path.read_text())
    expected = []
    init_env: dict[str, Any] = {}
    for name, svc in doc.get("services", {}).items():
        env = svc.get("environment") or {}
        if "INIT_MEMBERS" in env:
            init_env = env
        elif "RANKD_CLUSTER__ID" in env:
            expected.append(f"{env['RANKD_CLUSTER__ID']}={env.get('RANKD_CLUSTER__ADVERTISE_API')},{env.get('RANKD_CLUSTER__ADVERTISE_PEER')}")
    members = str(init_env.get("INIT_MEMBERS", "")).split()
    if not expected or sorted(members) != sorted(expected):
        return [f"rankd-init's INIT_MEMBERS {members} differ from what the nodes advertise {expected}"]
    api = init_env.get("INIT_ADDR")
    if api and not any(m.split("=", 1)[1].split(",")[0] == api for m in members):
        return [f"INIT_ADDR {api} is not a member's API address"]
    return []


# --- rankd --check-config ---------------------------------------------------------------


def rankd_binary() -> Path:
    for cand in (os.environ.get("RANKD"), ROOT / "target/debug/rankd", ROOT / "target/release/rankd"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    raise Skip("no rankd binary (set RANKD=..., or build with `make build-debug`)")


def check_config(toml_text: str, env: dict[str, str], what: str) -> None:
    binary = rankd_binary()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "rankd.toml"
        cfg.write_text(toml_text)
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("RANKD_")}
        run_env.update(env)
        out = subprocess.run(
            [str(binary), "--check-config", "--config", str(cfg)],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    if out.returncode != 0:
        raise Failure(f"{what}: rankd --check-config exit {out.returncode}: {out.stderr.strip()}")


# --- Compose ----------------------------------------------------------------------------


def compose_schema_errors(path: Path) -> list[str]:
    tool = Path(sys.executable).parent / "check-jsonschema"
    out = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode == 0:
        return []
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()][:20]


def compose_ref_errors(path: Path, check_files: bool = True) -> list[str]:
    """Cross-references the schema cannot see."""
    doc = yaml.safe_load(path.read_text())
    errors = []
    services = doc.get("services", {}) or {}
    for section in ("volumes", "secrets", "networks", "configs"):
        if section in doc and not isinstance(doc[section], dict):
            errors.append(f"top-level {section} must be a mapping")
    declared = {s: set((doc.get(s) or {}).keys()) for s in ("volumes", "secrets", "networks", "configs")}
    base = path.parent
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                errors.append(f"service {name}: depends_on an unknown service {dep!r}")
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if not src:
                continue
            if src.startswith((".", "/", "~")):
                if check_files and src.startswith(".") and not (base / src).exists():
                    errors.append(f"service {name}: bind mount source {src} does not exist")
            elif src not in declared["volumes"]:
                errors.append(f"service {name}: volume {src!r} is not declared")
        for s in svc.get("secrets", []):
            sname = s if isinstance(s, str) else s.get("source")
            if sname not in declared["secrets"]:
                errors.append(f"service {name}: secret {sname!r} is not declared")
        nets = svc.get("networks", [])
        for n in nets if isinstance(nets, list) else nets.keys():
            if n not in declared["networks"]:
                errors.append(f"service {name}: network {n!r} is not declared")
        build = svc.get("build")
        if isinstance(build, dict) and check_files:
            ctx = base / build.get("context", ".")
            if not ctx.is_dir():
                errors.append(f"service {name}: build context {build.get('context')} does not exist")
            elif not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"service {name}: dockerfile {build.get('dockerfile')} does not exist")
    return errors


# --- PromQL, metric names ---------------------------------------------------------------


def promql_errors(promtool: Path, exprs: list[tuple[str, str]]) -> list[str]:
    """Each (where, expr) checked as PromQL by promtool, through a throwaway rule file."""
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (where, expr) in enumerate(exprs):
            f = Path(tmp) / f"q{i}.yaml"
            f.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [{"record": "q:check", "expr": expr}]}]}))
            out = subprocess.run([str(promtool), "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                msg = " ".join(line.strip() for line in (out.stdout + out.stderr).splitlines() if "FAILED" in line or "parse error" in line or "error" in line.lower())
                errors.append(f"{where}: {expr[:100]}: {msg or 'rejected'}")
    return errors


def documented_series() -> set[str]:
    """Every series name docs/operations.md lists, with a histogram's _bucket/_sum/_count."""
    names = set()
    for line in (ROOT / "docs/operations.md").read_text().splitlines():
        m = re.match(r"\|\s*`(rankd_[a-z0-9_]+)(\{[^`]*\})?`\s*\|\s*(\w+)", line)
        if m:
            names.add(m.group(1))
            if m.group(3) == "histogram":
                names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_name_errors(text: str, where: str) -> list[str]:
    known = documented_series()
    if not known:
        return ["docs/operations.md lists no series"]
    used = set(re.findall(r"\brankd_[a-z0-9_]*[a-z0-9]\b", text))
    return [f"{where}: {n} is not a rankd series (docs/operations.md)" for n in sorted(used - known - NOT_YET_EXPORTED)]


# --- Grafana ----------------------------------------------------------------------------

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*"}


def dashboard_errors(path: Path, promtool: Path) -> list[str]:
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return [f"{rel(path)}: not JSON: {e}"]
    errors = []
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            errors.append(f"{rel(path)}: no {key}")
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        errors.append("panel ids must be present and unique")
    exprs = []
    for p in panels:
        gp = p.get("gridPos", {})
        if gp.get("x", 0) + gp.get("w", 0) > 24:
            errors.append(f"panel {p.get('title')!r} is wider than the grid")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            errors.append(f"panel {p.get('title')!r} has no query")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if not expr:
                errors.append(f"panel {p.get('title')!r} target {t.get('refId')}: empty expr")
                continue
            for var, val in GRAFANA_VARS.items():
                expr = expr.replace(var, val)
            exprs.append((f"panel {p.get('title')!r}", expr))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.*),\s*\w+\)$", q or "")
        if m:
            sel = m.group(1)
            for var, val in GRAFANA_VARS.items():
                sel = sel.replace(var, val)
            exprs.append((f"variable {v.get('name')}", sel))
    errors += promql_errors(promtool, exprs)
    errors += metric_name_errors(path.read_text(), rel(path))
    return errors


# --- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promtool", required=True, type=Path)
    args = ap.parse_args()
    promtool: Path = args.promtool

    # Kubernetes: every overlay, and the base.
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    rendered: dict[str, list[dict[str, Any]]] = {}
    for d in [K8S / "base", *overlays]:
        name = rel(d)

        def render_and_validate(d: Path = d, name: str = name) -> None:
            docs = kustomize_build(d)
            rendered[name] = docs
            errors = schema_errors(docs, name)
            if errors:
                raise Failure("\n".join(errors))

        check(f"kubernetes schema ({', '.join(K8S_VERSIONS)}): kustomize build {name}", render_and_validate)
    for d in overlays:
        name = rel(d)

        def invariants(d: Path = d, name: str = name) -> None:
            if name not in rendered:
                raise Failure("did not render")
            errors = rankd_invariants(rendered[name], gpu="cuda" in d.name)
            if errors:
                raise Failure("\n".join(errors))

        check(f"rankd invariants: {name}", invariants)

        def k8s_config(name: str = name) -> None:
            if name not in rendered:
                raise Failure("did not render")
            docs = rendered[name]
            text = next(x["data"]["rankd.toml"] for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"].startswith("rankd-config"))
            for ordinal in (0, 2):
                env = statefulset_pod_env(docs, ordinal)
                if env.get("RANKD_CLUSTER__ID") != str(ordinal + 1):
                    raise Failure(f"pod {ordinal} would get cluster id {env.get('RANKD_CLUSTER__ID')}, not {ordinal + 1}")
                check_config(text, env, f"pod rankd-{ordinal}")

        check(f"rankd --check-config: {name} ConfigMap with pods 0 and 2's environment", k8s_config)

    # Negative tests: each must be rejected.
    for bad in sorted((K8S / "testdata/invalid").glob("*.yaml")):
        check(
            f"rejects {rel(bad)}",
            lambda bad=bad: expect_rejected(rel(bad), schema_errors([d for d in yaml.safe_load_all(bad.read_text()) if d], rel(bad))),
        )

    def broken_overlay() -> None:
        try:
            kustomize_build(K8S / "testdata/broken-overlay")
        except Failure:
            return
        raise Failure("kustomize rendered testdata/broken-overlay, which names a missing patch")

    check("rejects deploy/k8s/testdata/broken-overlay (kustomize build fails)", broken_overlay)

    def invariants_catch() -> None:
        docs = kustomize_build(K8S / "testdata/service-links-overlay")
        expect_rejected("testdata/service-links-overlay", rankd_invariants(docs, gpu=False))

    check("rejects deploy/k8s/testdata/service-links-overlay (rankd invariants)", invariants_catch)

    # Compose.
    for f in (COMPOSE / "compose.yaml", COMPOSE / "compose.cuda.yaml"):

        def compose_ok(f: Path = f) -> None:
            errors = compose_schema_errors(f) + compose_ref_errors(f, check_files=f.name == "compose.yaml")
            if errors:
                raise Failure("\n".join(errors))

        check(f"compose schema and references: {rel(f)}", compose_ok)

    def compose_members() -> None:
        errors = compose_member_errors(COMPOSE / "compose.yaml")
        if errors:
            raise Failure("\n".join(errors))

    check("compose: rankd-init's members are the nodes as they advertise themselves", compose_members)

    def compose_configs() -> None:
        doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
        cuda = yaml.safe_load((COMPOSE / "compose.cuda.yaml").read_text())
        text = (COMPOSE / "rankd.toml").read_text()
        n = 0
        for name, svc in doc["services"].items():
            env = svc.get("environment") or {}
            # Nodes, not the rankctl one-shots (their RANKD_TOKEN/RANKD_CA_CERT are rankctl's).
            if "RANKD_NODE_ID" not in env:
                continue
            n += 1
            check_config(text, {k: str(v) for k, v in env.items()}, f"compose service {name}")
            gpu_env = {**env, **(cuda["services"].get(name, {}).get("environment") or {})}
            check_config(text, {k: str(v) for k, v in gpu_env.items()}, f"compose service {name} with compose.cuda.yaml")
        if n != 3:
            raise Failure(f"expected 3 rankd services, found {n}")
        check_config((DOCKER / "rankd.toml").read_text(), {}, "deploy/docker/rankd.toml")

    check("rankd --check-config: compose nodes (CPU and CUDA) and the image default", compose_configs)

    def bad_config() -> None:
        try:
            check_config((COMPOSE / "testdata/bad-rankd.toml").read_text(), {}, "bad-rankd.toml")
        except Failure:
            return
        raise Failure("rankd --check-config accepted testdata/bad-rankd.toml")

    check("rejects deploy/compose/testdata/bad-rankd.toml (rankd --check-config)", bad_config)

    for bad in sorted((COMPOSE / "testdata").glob("*.yaml")):
        check(
            f"rejects {rel(bad)}",
            lambda bad=bad: expect_rejected(rel(bad), compose_schema_errors(bad) + compose_ref_errors(bad, check_files=False)),
        )

    # Prometheus config (also loads the rule file it names).
    def prom_config(path: Path) -> list[str]:
        out = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60)
        return [] if out.returncode == 0 else [(out.stdout + out.stderr).strip()]

    def prom_ok() -> None:
        errors = prom_config(PROM / "prometheus.yml")
        if errors:
            raise Failure("\n".join(errors))

    check("promtool check config deploy/prometheus/prometheus.yml", prom_ok)
    check(
        "rejects deploy/prometheus/testdata/bad-prometheus.yml",
        lambda: expect_rejected("bad-prometheus.yml", prom_config(PROM / "testdata/bad-prometheus.yml")),
    )

    # Metric names in the rules.
    def rule_names() -> None:
        errors = metric_name_errors((PROM / "rules.yaml").read_text(), "deploy/prometheus/rules.yaml")
        if errors:
            raise Failure("\n".join(errors))

    check("metric names in deploy/prometheus/rules.yaml are rankd series", rule_names)
    check(
        "rejects deploy/prometheus/testdata/unknown-metric-rules.yaml (metric names)",
        lambda: expect_rejected(
            "unknown-metric-rules.yaml",
            metric_name_errors((PROM / "testdata/unknown-metric-rules.yaml").read_text(), "unknown-metric-rules.yaml"),
        ),
    )

    # Grafana.
    def dash_ok() -> None:
        errors = dashboard_errors(GRAFANA / "rankd.json", promtool)
        if errors:
            raise Failure("\n".join(errors))

    check("grafana dashboard deploy/grafana/rankd.json (JSON, layout, PromQL, metric names)", dash_ok)

    def provisioning_ok() -> None:
        for f in sorted((GRAFANA / "provisioning").rglob("*.yaml")):
            doc = yaml.safe_load(f.read_text())
            if doc.get("apiVersion") != 1 or not (doc.get("datasources") or doc.get("providers")):
                raise Failure(f"{rel(f)}: not a Grafana provisioning file")

    check("grafana provisioning files parse", provisioning_ok)
    for bad in sorted((GRAFANA / "testdata").glob("*.json")):
        check(f"rejects {rel(bad)}", lambda bad=bad: expect_rejected(rel(bad), dashboard_errors(bad, promtool)))

    # Dockerfile and the init script baked into the image.
    def docker_ok() -> None:
        errors = dockerfile_errors(DOCKER / "Dockerfile", ROOT)
        out = subprocess.run(["sh", "-n", str(DOCKER / "rankd-cluster-init.sh")], capture_output=True, text=True)
        if out.returncode != 0:
            errors.append(f"rankd-cluster-init.sh: {out.stderr.strip()}")
        if errors:
            raise Failure("\n".join(errors))

    check("Dockerfile static checks: deploy/docker/Dockerfile (not built)", docker_ok)

    def docker_bad() -> None:
        errors = dockerfile_errors(DOCKER / "testdata/Dockerfile.bad", ROOT)
        kinds = {"unknown instruction": False, "no earlier stage": False, "does not exist": False, "not valid sh": False, "excluded by the ignore file": False}
        for e in errors:
            for k in kinds:
                if k in e:
                    kinds[k] = True
        missing = [k for k, hit in kinds.items() if not hit]
        if missing:
            raise Failure(f"testdata/Dockerfile.bad should be flagged for: {', '.join(missing)}; got: {errors}")

    check("rejects deploy/docker/testdata/Dockerfile.bad (every kind of mistake)", docker_bad)

    passed = sum(1 for _, r in RESULTS if r == "ok")
    failed = sum(1 for _, r in RESULTS if r == "fail")
    skipped = sum(1 for _, r in RESULTS if r == "skip")
    print(f"validate-deploy: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
