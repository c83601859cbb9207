# Everything a new machine needs, in two commands: `make run` and `make test`.

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
GUESTS      := target/$(WASM_TARGET)/release
HOST        := target/release/host
PORT        ?= 12345

.PHONY: build host guests wasm-target run test bench bench-quick clean

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

# Unit tests and end-to-end tests against the real binary, over loopback.
# Every test file runs even when an earlier one fails, so one run shows
# every failure.
test: build
	$(CARGO) test --release -p host --no-fail-fast

# Formatting and clippy, warnings as errors, for both workspaces: the root
# one (host, bench) and the guests' (wasm32-wasip2, see guest/.cargo/config.toml).
.PHONY: lint
lint: wasm-target
	$(CARGO) fmt --all --check
	cd guest && $(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	cd guest && $(CARGO) clippy --release --all-targets -- -D warnings

bench: build
	$(CARGO) run --release -p bench -- --out bench/results

bench-quick: build
	$(CARGO) run --release -p bench -- --quick --out bench/results/quick

clean:
	$(CARGO) clean
