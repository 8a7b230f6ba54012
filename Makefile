# pgwarden: `make demo` to see it work, `make test` to check everything.
GO      ?= go
BIN     := bin/pgwarden
# A release version (the REST API's patroni.version and the package's); the
# commit is in `pgwarden version` from the build info.
VERSION ?= $(shell cat VERSION)
LDFLAGS := -X main.version=$(VERSION)
# Integration tests start real PostgreSQL, etcd, PgBouncer and HAProxy processes.
ITAGS   := -tags integration

.PHONY: all build docs install deb test test-unit test-integration lint bench sim chaos demo deps clean

all: build

build:
	GO=$(GO) LDFLAGS="$(LDFLAGS)" sh scripts/build.sh $(BIN)

# Shell completion and the man page, generated from the command table.
docs: build
	$(BIN) completion bash > bin/pgwarden.bash
	$(BIN) completion zsh > bin/_pgwarden
	$(BIN) man > bin/pgwarden.1
	gzip -9nf -k bin/pgwarden.1

# The binary, the systemd unit, completion, the man page and an example
# configuration; DESTDIR for staging, PREFIX for the binary (the unit is
# rewritten to it).
PREFIX  ?= /usr/local
DESTDIR ?=
install: docs
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/pgwarden
	install -d -m 0755 $(DESTDIR)/lib/systemd/system $(DESTDIR)/etc/pgwarden
	sed 's#/usr/bin/pgwarden#$(PREFIX)/bin/pgwarden#g' examples/pgwarden@.service > $(DESTDIR)/lib/systemd/system/pgwarden@.service
	install -D -m 0644 bin/pgwarden.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/pgwarden
	install -D -m 0644 bin/_pgwarden $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_pgwarden
	install -D -m 0644 bin/pgwarden.1.gz $(DESTDIR)$(PREFIX)/share/man/man1/pgwarden.1.gz
	install -m 0644 examples/node1.yaml $(DESTDIR)/etc/pgwarden/node.yaml.example

# The Debian package (nfpm, from packaging/nfpm.yaml) into bin/.
deb: docs
	$(GO) run ./packaging -version $(VERSION) -out bin

# Everything: the unit tests with the race detector, then the integration tests.
test: deps lint test-unit test-integration

test-unit:
	$(GO) test -race -count=1 -timeout 10m ./...

# The fault campaign's package runs alone, after the others: it is a real
# cluster under faults, and must not share 2 cores with other clusters.
test-integration: deps
	$(GO) test $(ITAGS) -count=1 -p 2 -timeout 30m $$($(GO) list ./... | grep -v /integration/chaos)
	@mkdir -p bin; echo "$(GO) test $(ITAGS) -count=1 -timeout 20m -v ./integration/chaos > bin/chaos-short.log"; \
	  $(GO) test $(ITAGS) -count=1 -timeout 20m -v ./integration/chaos > bin/chaos-short.log 2>&1; rc=$$?; \
	  grep -E '^(--- |ok|FAIL)|chaos: |caught: |VIOLATION' bin/chaos-short.log | sed 's/^ *//'; \
	  sed -n '/fault  *count  *max unavail/,/^ *acknowledged /p' bin/chaos-short.log; \
	  if [ $$rc -ne 0 ]; then tail -200 bin/chaos-short.log; fi; exit $$rc

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

# The fault campaign at length: FAULTS faults chosen by SEED (0: from the
# clock), SYNC=1 for synchronous_mode, TTL, KINDS (comma list). An hour or
# two for 100 faults; see scripts/chaos.sh.
FAULTS ?= 100
SEED   ?= 0
SYNC   ?= 0
TTL    ?= 10
KINDS  ?=
chaos: deps
	@FAULTS=$(FAULTS) SEED=$(SEED) SYNC=$(SYNC) TTL=$(TTL) KINDS=$(KINDS) GO=$(GO) sh scripts/chaos.sh

demo: build
	$(BIN) demo

# Installs PostgreSQL 15, PgBouncer, HAProxy and etcd with apt-get, only when
# missing, and downloads the Go modules.
deps:
	@sh scripts/deps.sh
	$(GO) mod download

clean:
	rm -rf bin
