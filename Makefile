# ckpt: developer entry points. `make test` and `make demo` work on a fresh Debian machine
# (as root, or with sudo for tools/system-deps.sh).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup deps tools test test-fast test-fast-nonroot lint crd demo bench clean images wrapper cluster cluster-down load-image

help:
	@echo "make setup  - virtualenv with ckpt and its test tools ($(VENV))"
	@echo "make deps   - Debian packages: runc, iptables, busybox-static, openssl, postgresql"
	@echo "make tools  - build the control plane, node binaries, S3 server, images; CRIU 4 (cached in .cache/)"
	@echo "make test   - the whole test suite against real apiserver, runc, CRIU, PostgreSQL"
	@echo "make test-fast - the fast tier (pytest -m 'not e2e'): no root, no real parts"
	@echo "make test-fast-nonroot - as root: the fast tier run as the user nobody"
	@echo "make wrapper - the static ckpt-runc runtime wrapper (.cache/bin/ckpt-runc)"
	@echo "make demo   - checkpoint a Pod and restore it as a new Pod on a real local cluster"
	@echo "make bench  - benchmarks (tables; see BENCHMARKS.md)"
	@echo "make lint   - ruff, mypy --strict, import-linter contracts, gofmt, go vet, shellcheck"
	@echo "make images - build the container images with buildah (OCI archives in .cache/images/)"
	@echo "make cluster      - a real local cluster (NODES=2 nodes) running ckpt from its images"
	@echo "make cluster-down - stop it, leaving nothing behind"
	@echo "make load-image IMAGE=archive.tar - import an OCI archive into every node"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(STAMP)

deps:
	tools/system-deps.sh

# Everything the suite runs, built (or found cached under .cache/) before pytest starts, so
# that no fixture builds under a test timeout: the control plane and node binaries from
# pinned Go modules, CRIU 4.2, SeaweedFS (the tests' S3 server), Prometheus and promtool (the
# monitoring tests), the ckpt images and the images of the applications tests/apps checkpoints.
tools: deps
	tools/criu/install.sh >/dev/null
	tools/controlplane/build.sh etcd kube-apiserver kube-controller-manager kube-scheduler \
		kube-proxy kubelet >/dev/null
	for tool in containerd cri-tools cni coredns pause seaweedfs prometheus; do \
		tools/$$tool/build.sh >/dev/null || exit 1; done
	tools/images/build.sh >/dev/null
	tools/apps/build.sh >/dev/null

# Two workers (pytest-xdist; tests/conftest.py schedules): the tests of the local cluster in
# one, in order (they share one cluster, and the last one stops it), every other module in
# the other; most of the cluster tests' time is spent waiting on pods.
test: setup tools
	cd cmd/ckpt-runc && go test ./...
	$(BIN)/pytest -n 2

# Everything but the tests marked e2e: no root, runc, CRIU, cluster or PostgreSQL.
test-fast: setup
	$(BIN)/pytest -m "not e2e"

# The fast tier as the unprivileged user nobody. The venv's Python may live where nobody
# cannot read it (a pyenv under /root, mode 0700), so a venv made from the system python3 (the
# same minor version) borrows the packages of $(VENV); .venv/bin on PATH brings kubectl and
# hadolint. nobody cannot write the checkout: no bytecode, no pytest cache.
NONROOT_VENV := .cache/nonroot-venv
SYSTEM_PYTHON ?= /usr/bin/python3
PURELIB := import sysconfig; print(sysconfig.get_path("purelib"))
test-fast-nonroot: setup
	test -x $(NONROOT_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv --without-pip $(NONROOT_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python -c '$(PURELIB)')')" \
		> "$$($(NONROOT_VENV)/bin/python -c '$(PURELIB)')/ckpt-venv.pth"
	runuser -u nobody -- env PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONDONTWRITEBYTECODE=1 \
		$(NONROOT_VENV)/bin/python -m pytest -m "not e2e" -p no:cacheprovider $(PYTEST_ARGS)

# The node's runtime wrapper: static (hosts have no Python and may lack a matching libc).
wrapper:
	cd cmd/ckpt-runc && CGO_ENABLED=0 go build -trimpath -o ../../.cache/bin/ckpt-runc .

# ruff, mypy --strict over src/ and harness/ (settings in pyproject.toml), the import-linter
# layers; gofmt and go vet over the node wrapper; shellcheck over the build and CI scripts.
lint: setup deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd cmd/ckpt-runc && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	cd cmd/ckpt-runc && go vet ./...
	find tools .ci -name '*.sh' -o -path .ci/run | sort | xargs shellcheck -x

crd: setup
	$(BIN)/python -m ckpt.apis.crd > crds/checkpoint.yaml
	$(BIN)/python -m ckpt.apis.crd storagelocation > crds/storagelocation.yaml
	$(BIN)/python -m ckpt.apis.restore_crd > crds/restore.yaml
	$(BIN)/python -m ckpt.apis.policy_crd > crds/checkpointpolicy.yaml

demo: setup tools
	$(BIN)/python -m harness.demo

# The harness (harness/, not part of the wheel) is imported from the repository root. Each
# bench prints its table, saves bench/results/<bench>.json and draws bench/plots/<bench>.svg
# with matplotlib (the `bench` extra). The cluster's benches run only while `make cluster` is
# up; the last line redraws every saved record, so their figures stay those of their last run.
bench: setup tools
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[test,bench]'
	PYTHONPATH=. $(BIN)/python bench/api.py
	PYTHONPATH=. $(BIN)/python bench/agent.py
	PYTHONPATH=. $(BIN)/python bench/storage.py
	PYTHONPATH=. $(BIN)/python bench/operator_load.py
	if PYTHONPATH=. $(BIN)/python -c 'from harness.cluster.cluster import LocalKubeCluster as C; \
			raise SystemExit(not C().running())'; then \
		PYTHONPATH=. $(BIN)/python bench/restore.py && PYTHONPATH=. $(BIN)/python bench/apps.py; \
	else echo "no local cluster (make cluster): bench/restore.py and bench/apps.py not run"; fi
	PYTHONPATH=. $(BIN)/python -m bench.plots

# The Dockerfile's targets built with buildah on mmdebstrap'd Debian bases (no Docker engine);
# prints the folder holding ckpt.tar and ckpt-agent.tar (cached by a hash of the inputs).
images: deps
	tools/images/build.sh

# The local cluster (harness/cluster): control plane, NODES containerd + kubelet nodes,
# kube-proxy, CoreDNS, and ckpt from deploy/local with its images. Builds what is missing;
# a running cluster is reused. Prints the `export KUBECONFIG=...` line.
NODES ?= 2
cluster: setup tools
	$(BIN)/python -m harness.cluster up --nodes $(NODES)

cluster-down: setup
	$(BIN)/python -m harness.cluster down

load-image: setup
	@test -n "$(IMAGE)" || { echo "usage: make load-image IMAGE=path/to/oci-archive.tar"; exit 2; }
	$(BIN)/python -m harness.cluster load-image $(IMAGE)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
