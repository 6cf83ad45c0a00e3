# Careloop: the only entry points a newcomer needs.
#   make run    the whole platform on this machine (Kafka, PostgreSQL, OpenBao, services)
#   make test   everything the tests need, then lint, types and every test tier
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
RUN := $(UV) run --frozen
# Helm renders and lints the chart in the tests; built from its pinned release with Go.
HELM_VERSION := v3.22.0
# The Kubernetes minor its client libraries (k8s.io/client-go v0.37) speak, stamped in as
# helm's own release build does; without it helm assumes 1.20.
HELM_KUBE_MINOR := 37
HELM := $(TOOLS)/bin/helm

.PHONY: help setup kafka-jars helm run test lint typecheck contracts unit service e2e bench bench-100k clean

help:
	@echo "make run    start the platform (Ctrl-C stops it)"
	@echo "make test   install what is missing, then lint, type-check and run every test"
	@echo "make bench  throughput and latency, reminders for 20,000 appointments, 10,000 referral loops, care gaps for 100,000 synthetic patients (about 45 min)"
	@echo "make bench-100k  reminders for 100,000 appointments end to end (35-50 min on 2 cores)"

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

setup: $(UV)
	$(UV) sync --frozen --python $(PYTHON)

$(HELM): | $(UV)
	@command -v go >/dev/null || { echo "Go is required to build helm $(HELM_VERSION) (go not found)"; exit 1; }
	GOBIN=$(CURDIR)/$(TOOLS)/bin GOFLAGS=-buildvcs=false go install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR) \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR)" \
		helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

kafka-jars: setup
	$(RUN) careloop dev fetch-kafka

run: setup kafka-jars
	$(RUN) careloop dev up

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) python -m careloop_contracts.generate --check
	$(RUN) python -m careloop_cli.settings_doc --check
	$(RUN) python -m careloop_kit.auth.permissions_doc --check

typecheck: setup
	$(RUN) mypy libs/kit/careloop_kit cli/careloop_cli contracts/careloop_contracts \
		services/patients/careloop_patients services/audit/careloop_audit \
		services/identity/careloop_identity services/gateway/careloop_gateway \
		services/scheduling/careloop_scheduling services/messaging/careloop_messaging \
		services/referrals/careloop_referrals services/tasks/careloop_tasks

# Test processes (pytest-xdist), each with its own Kafka, PostgreSQL and OpenBao; a test
# file stays in one process, so its module fixtures start once. Half the suite waits on
# brokers and timers, so two workers keep a two-core machine busy; a third starves the
# crash and end-to-end tests of the CPU their timing assumes (TEST_WORKERS=0: one
# process, no xdist). The 25 slowest tests are listed at the end, to show where the time
# goes when the suite grows.
TEST_WORKERS ?= 2
# Where PYTHONDONTWRITEBYTECODE is set (it is on our runners) Python caches no bytecode,
# so every process the tests start (each service, migration, crash rig and CLI run,
# hundreds in all) compiled its whole import tree again: 7 s of CPU to import a service
# instead of 2.5 s. Compiled once here (seconds when already current), all of them read it.
test: setup kafka-jars helm lint typecheck
	$(RUN) python -m compileall -q -j 0 \
		$$($(RUN) python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
		libs cli contracts services tests
	$(RUN) pytest --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

unit: setup
	$(RUN) pytest -m unit

# Sections 1-4 and the reminder chain at a size that keeps the run practical; the issue's
# 100,000-appointment figure is its own target (docs/benchmarks.md).
BENCH_APPOINTMENTS ?= 20000

bench: setup kafka-jars
	$(RUN) python tests/bench/run_bench.py --appointments $(BENCH_APPOINTMENTS)

bench-100k: setup kafka-jars
	$(RUN) python tests/bench/run_bench.py --only reminders --appointments 100000

clean:
	rm -rf .venv $(TOOLS) .careloop/kafka
