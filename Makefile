# pgwarden: `make demo` to see it work, `make test` to check everything.
GO      ?= go
BIN     := bin/pgwarden
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Integration tests start real PostgreSQL, etcd, PgBouncer and HAProxy processes.
ITAGS   := -tags integration

.PHONY: all build test test-unit test-integration lint bench sim demo deps clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pgwarden

# Everything: the unit tests with the race detector, then the integration tests.
test: deps lint test-unit test-integration

test-unit:
	$(GO) test -race -count=1 -timeout 10m ./...

test-integration: deps
	$(GO) test $(ITAGS) -count=1 -p 2 -timeout 30m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet $(ITAGS) ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; fi

bench: deps build
	@WITH_WRK=1 sh scripts/deps.sh
	@GO=$(GO) sh scripts/bench.sh

# The simulated cluster at length: SIM_SEEDS seeded fault schedules (make
# test runs 1000, 150 under -race); prints its wall time and fault counts.
SIM_SEEDS ?= 10000
sim:
	$(GO) test -count=1 -timeout 120m -run 'TestSimulatedCluster$$' -v ./agent -sim.seeds $(SIM_SEEDS)

demo: build
	$(BIN) demo

# Installs PostgreSQL 15, PgBouncer, HAProxy and etcd with apt-get, only when
# missing, and downloads the Go modules.
deps:
	@sh scripts/deps.sh
	$(GO) mod download

clean:
	rm -rf bin
