# rankd: two commands do all the setup on a fresh machine.
#   make run   - install torch into .venv if missing, export the demo model if missing,
#                build in release mode, start one node and print how to query it
#   make test  - fmt, clippy, alert-rule and manifest checks, fuzz smoke runs, unit tests and
#                integration tests against real rankd processes

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE := models/demo
CONFIG ?= deploy/rankd.toml

# tch builds against the torch inside .venv (see docs/gpu.md); binaries get an rpath to it.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test build build-debug model venv bench bench-compression bench-gpu fmt lint clean cluster cluster-down drill \
	test-rules validate-deploy fuzz-smoke

venv: $(VENV)/.installed
$(VENV)/.installed: deploy/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
	touch $@

model: $(BUNDLE)/manifest.json
$(BUNDLE)/manifest.json: $(VENV)/.installed deploy/demo_model/export.py deploy/demo_model/bundle_files.py
	PYTHONHASHSEED=0 $(PY) deploy/demo_model/export.py demo --out $(BUNDLE) --force

build: venv
	cargo build --release --bins

build-debug: venv
	cargo build --workspace --bins

KEYRING := data/keyring.toml

$(KEYRING):
	mkdir -p data
	target/release/rankctl keys generate --out $(KEYRING)

run: model build
	$(MAKE) --no-print-directory $(KEYRING)
	@echo
	@echo "rankd is starting: gRPC on 127.0.0.1:50051, metrics on http://127.0.0.1:9464/metrics"
	@echo "Query it from another terminal:"
	@echo "  target/release/rankctl rank --addr http://127.0.0.1:50051 --query-file $(BUNDLE)/example_query.json"
	@echo "  target/release/rankctl health --addr http://127.0.0.1:50051"
	@echo
	exec target/release/rankd serve --config $(CONFIG)

# A local 3-node cluster (deploy/cluster/), formed, with the demo model uploaded and promoted.
cluster: model build
	$(MAKE) --no-print-directory $(KEYRING)
	deploy/cluster/up.sh

cluster-down:
	deploy/cluster/down.sh

fmt: venv
	cargo fmt --all -- --check

lint: venv
	cargo clippy --workspace --all-targets -- -D warnings

test: model fmt lint build-debug test-rules validate-deploy fuzz-smoke
	cargo test --workspace

bench: model build
	target/release/rankload bench --bundle $(BUNDLE) --rankd target/release/rankd --out bench-out/bench.json

# Every compression variant of the demo model (docs/compression.md), measured in one run.
bench-compression: model build
	$(PY) deploy/bench/compression.py

# Every disaster-recovery drill on a fresh local 3-node cluster (release build); writes
# docs/drills.md, docs/drills.json and docs/drills-charts/. Exits non-zero when an objective
# is missed.
DRILL_MACHINE ?= $(shell nproc) cores, $(shell free -g | awk '/Mem:/ {print $$2}') GiB
drill: model build
	target/release/rankload drill --all --out-dir docs --stem drills --machine "$(DRILL_MACHINE)"

# Deployment assets (deploy/, docs/deploy.md): checked without a container engine or a
# cluster. Tools go into .tools/ (gitignored), fetched on first use: promtool from Debian's
# prometheus package (apt-get download + dpkg-deb -x, no root install) and the Python
# validators in .tools/venv. pykustomize bundles kustomize itself (Go) as a shared
# library; its metadata asks for Python 3.14, which the library does not need.
TOOLS       := .tools
TOOLS_PY    := $(TOOLS)/venv/bin/python
PROMTOOL    := $(TOOLS)/prometheus/usr/bin/promtool
PYKUSTOMIZE := pykustomize==0.1.4

$(PROMTOOL):
	deploy/tools/fetch-deb.sh prometheus $(TOOLS)/prometheus

$(TOOLS)/venv/.installed: deploy/tools/requirements.txt
	test -x $(TOOLS_PY) || python3 -m venv $(TOOLS)/venv
	$(TOOLS_PY) -m pip install --quiet --disable-pip-version-check -r deploy/tools/requirements.txt
	$(TOOLS_PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python $(PYKUSTOMIZE)
	touch $@

# Prometheus alert rules: promtool check rules + the unit tests in rules_test.yaml, and
# proof that both reject bad input.
test-rules: $(PROMTOOL)
	deploy/tools/test-rules.sh $(CURDIR)/$(PROMTOOL)

# Fuzz targets (fuzz/, docs/fuzzing.md), 20 s each; installs cargo-fuzz into .tools/ on first use.
fuzz-smoke:
	deploy/tools/fuzz-smoke.sh

# Kubernetes manifests (kustomize-rendered, schema-validated), compose, Prometheus config,
# Grafana dashboard, Dockerfile; each check also proven to reject a bad input.
validate-deploy: $(TOOLS)/venv/.installed $(PROMTOOL)
	$(TOOLS_PY) deploy/tools/validate_deploy.py --promtool $(PROMTOOL)

clean:
	cargo clean
	rm -rf $(BUNDLE) bench-out
	@echo "data/ (the model store and keyring) is kept; remove it by hand if you mean to"
