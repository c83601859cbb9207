# Everything a new machine needs, in two commands: `make run` and `make test`.

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
GUESTS      := target/$(WASM_TARGET)/release
HOST        := target/release/host
PORT        ?= 12345

.PHONY: build host guests wasm-target run test bench bench-quick bench-ab bench-check clean

build: guests host

# rustup is the only thing fetched; the target is installed once.
wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

guests: wasm-target
	cd guest && $(CARGO) build --release

host:
	$(CARGO) build --release -p host

run: build
	$(HOST) run $(GUESTS)/hello.wasm --port $(PORT)

# Unit tests and end-to-end tests against the real binary, over loopback
# (tests/, one test binary). The end-to-end tests run even when a unit
# test fails, so one run shows every failure. First, natively (the guests'
# workspace builds for wasm by default): the guest SDK's tests and the
# guests' protocol logic over its in-memory connections.
#
# The Python packages the tests' clients use (redis for resp's client,
# kubernetes-validate for the manifests) are installed here, into a virtual
# environment under target/, made once; its bin/ comes first on the tests'
# PATH. The system servers and clients (redis-server, redis-tools, haproxy,
# netcat-openbsd, curl) come from the machine: a test that needs a missing
# one says `SKIPPED: ...` and returns (.ci/run installs them all and fails
# on any skip).
NATIVE := $(shell rustc -vV | sed -n 's/^host: //p')
VENV   := target/venv
$(VENV)/ready:
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet redis kubernetes-validate
	touch $@

test: build $(VENV)/ready
	cd guest && $(CARGO) test --target $(NATIVE) -p netplug-guest -p echo -p http -p resp
	cd examples/upper && CARGO_TARGET_DIR=../../target/template-upper $(CARGO) test --target $(NATIVE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) test --release -p host --no-fail-fast

# Formatting and clippy, warnings as errors, for both workspaces: the root
# one (host, bench) and the guests' (wasm32-wasip2, see guest/.cargo/config.toml).
# The guest SDK carries its own copy of the WIT (sdk/wit); it must be wit/.
.PHONY: lint
lint: wasm-target
	diff -r wit sdk/wit
	$(CARGO) fmt --all --check
	cd guest && $(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	cd guest && $(CARGO) clippy --release --all-targets -- -D warnings
	cd examples/upper && $(CARGO) fmt --check
	cd examples/upper && CARGO_TARGET_DIR=../../target/template-upper $(CARGO) clippy --release --all-targets -- -D warnings

bench: build
	$(CARGO) run --release -p bench -- --out bench/results

bench-quick: build
	$(CARGO) run --release -p bench -- --quick --out bench/results/quick

# Two host builds on the same guests, interleaved (bench/README.md), e.g.
# make bench-ab A=/path/to/baseline/host B=target/release/host AB_ARGS='--reps 3'
ifneq ($(filter bench-ab,$(MAKECMDGOALS)),)
ifeq ($(and $(A),$(B)),)
$(error usage: make bench-ab A=HOST_BIN B=HOST_BIN [AB_ARGS='--reps N ...'])
endif
endif
bench-ab: build
	$(CARGO) run --release -p bench -- ab --a $(A) --b $(B) $(AB_ARGS)

# The instruction-count guard (bench/check.sh): instructions per seed
# exchange, HTTP keep-alive request, 64 KiB echo, resp GET and SET and
# proxied request, counted by callgrind, each within 3% of the baseline
# committed in bench/baseline.tsv. Needs valgrind; about 10 minutes.
bench-check: build
	bench/check.sh $(HOST)

clean:
	$(CARGO) clean
