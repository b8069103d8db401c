"""Static checks of a Dockerfile without building it: known instructions, FROM variables
declared by an ARG, COPY sources present in the build context and not excluded by the
ignore file, and RUN lines that are valid sh. Used by validate_deploy.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def shown(p: Path, context: Path) -> str:
    """`p` as messages name it: relative to the build context when it lies inside it."""
    try:
        return str(p.relative_to(context))
    except ValueError:
        return str(p)


INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER",
}


def ignore_patterns(dockerfile: Path, context: Path) -> list[tuple[bool, str]]:
    f = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not f.exists():
        f = context / ".dockerignore"
    pats = []
    if f.exists():
        for line in f.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                neg = line.startswith("!")
                pats.append((neg, line.lstrip("!").strip("/")))
    return pats


def ignored(path: str, pats: list[tuple[bool, str]]) -> bool:
    """.dockerignore semantics, close enough: a pattern matches the path or a parent of it;
    `**` matches any number of directories; the last matching pattern wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for neg, pat in pats:
        rx = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, p) for p in prefixes):
            result = not neg
    return result


def dockerfile_errors(path: Path, context: Path) -> list[str]:
    import dockerfile  # type: ignore[import-untyped]

    try:
        cmds = dockerfile.parse_file(str(path))
    except Exception as e:
        return [f"{shown(path, context)}: does not parse: {e}"]
    errors = []
    pats = ignore_patterns(path, context)
    stages: list[str] = []
    global_args: set[str] = set()
    seen_from = False
    for c in cmds:
        where = f"{shown(path, context)}:{c.start_line}"
        if c.cmd.upper() not in INSTRUCTIONS:
            errors.append(f"{where}: unknown instruction {c.cmd}")
            continue
        cmd = c.cmd.upper()
        if cmd == "ARG" and not seen_from:
            global_args.update(v.split("=", 1)[0] for v in c.value)
        elif cmd == "FROM":
            seen_from = True
            image = c.value[0]
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", image):
                if var not in global_args:
                    errors.append(f"{where}: FROM uses ${var}, which no ARG before the first FROM declares")
            if len(c.value) >= 3 and c.value[1].upper() == "AS":
                stages.append(c.value[2].lower())
            else:
                stages.append(str(len(stages)))
        elif cmd in ("COPY", "ADD"):
            from_flag = next((f.split("=", 1)[1] for f in c.flags if f.startswith("--from=")), None)
            srcs = list(c.value[:-1])
            if from_flag is not None:
                if from_flag.lower() not in stages[:-1] and not from_flag.isdigit() and "/" not in from_flag and ":" not in from_flag:
                    errors.append(f"{where}: COPY --from={from_flag}: no earlier stage of that name")
                continue
            for src in srcs:
                if re.match(r"^[a-z]+://", src):
                    continue
                clean = src.strip("/") or "."
                matches = list(context.glob(clean)) if any(ch in clean for ch in "*?[") else [context / clean]
                if not any(m.exists() for m in matches):
                    errors.append(f"{where}: {cmd} source {src} does not exist in the build context")
                elif clean != "." and ignored(clean, pats):
                    errors.append(f"{where}: {cmd} source {src} is excluded by the ignore file")
        elif cmd == "RUN" and not c.json:
            script = " ".join(c.value)
            out = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                errors.append(f"{where}: RUN is not valid sh: {out.stderr.strip()}")
    if not stages:
        errors.append(f"{shown(path, context)}: no FROM")
    return errors
