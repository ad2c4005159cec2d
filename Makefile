# auditproc build entry point. The two commands of the README's quick start:
#   make demo   — the main job: real Redis, plugins built, events flowing, a summary
#   make test   — the whole test suite (unit, integration, end-to-end, faults)
# Both install what a fresh Debian machine lacks (scripts/deps.sh).

export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BIN      := bin
WASM_OUT := build/wasm

.PHONY: all build deps plugins lint test test-short demo bench redis-image image soak clean

all: build plugins

deps:
	@scripts/deps.sh

# version and revision are stamped into the binary (auditproc version,
# auditproc_build_info): git describe and the commit, when git knows them.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.revision=$(REVISION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/auditproc ./cmd/auditproc

# Every Wasm module the examples and tests use: example plugins (Go and C) and
# the hostile fixtures. Output goes to $(WASM_OUT)/<name>.wasm.
plugins: deps
	@scripts/build-plugins.sh $(WASM_OUT)

# The container backend's Redis image auditproc/redis:7-local, built from this
# machine's redis-server without pulling anything; nothing to do when present.
redis-image:
	@scripts/redis-image.sh

# auditproc's image (AUDITPROC_IMAGE, default auditproc:local) FROM scratch,
# from a static binary and the example plugins built here, plus the Redis
# image when missing: nothing is pulled (scripts/image.sh, docs/deployment.md).
image: deps
	@scripts/image.sh

# A bounded soak of the fault suite on real containers: random faults for
# DURATION (default 5m), then the invariant table; it stops on its own.
DURATION ?= 5m
soak: deps image
	AUDITPROC_SOAK=$(DURATION) $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 0 ./tests/faults

# `make test` builds it only when a Docker engine answers (asked only for that
# goal): without Docker the tests use the process backend (redis-server).
ifneq ($(filter test,$(MAKECMDGOALS)),)
DOCKER_UP := $(shell timeout 10 docker info >/dev/null 2>&1 && echo yes)
endif

# go vet and staticcheck over the host's packages and, built for wasip1, the
# guest side (ABI, plugins, examples). staticcheck is pinned and installed
# into build/tools on first use. Part of `make test`.
STATICCHECK := build/tools/staticcheck
$(STATICCHECK):
	GOBIN=$(CURDIR)/build/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: $(STATICCHECK)
	$(GO) vet ./...
	$(STATICCHECK) ./...
	GOOS=wasip1 GOARCH=wasm $(STATICCHECK) ./abi/... ./plugins/... ./examples/...

# The whole suite. Tests that need Redis or Docker skip on a laptop without
# them; with AUDITPROC_NO_SKIP=1 (set by .ci/run) such a skip is a failure.
# The fault suite's invariant tables are printed at the end, passing or not.
test: deps plugins lint $(if $(DOCKER_UP),redis-image image)
	@mkdir -p build && rm -f build/faults-report.txt
	rc=0; AUDITPROC_FAULTS_REPORT=$(CURDIR)/build/faults-report.txt $(GO) test -count=1 -timeout 30m ./... || rc=$$?; \
	if [ -f build/faults-report.txt ]; then echo "== fault suite invariant tables"; cat build/faults-report.txt; fi; \
	exit $$rc

test-short: plugins
	$(GO) test -short -count=1 ./...

# The main job: a demo pipeline on real Redis, with a summary (scripts/demo.sh).
demo:
	@scripts/demo.sh

# Side-by-side throughput, CPU, RSS and latency of auditproc against a plain
# go-redis loop, on a throwaway redis-server (docs/performance.md). Not part
# of `make test`. BENCH_FLAGS, for example --entries 50000 --only baseline,default.
bench: build plugins
	$(BIN)/auditproc bench $(BENCH_FLAGS)

clean:
	rm -rf $(BIN) build
