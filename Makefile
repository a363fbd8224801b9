# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build test unit lint fmt crds demo clean

all: build

build:
	$(CARGO) build --workspace

## Regenerate the committed CRDs from the Rust types (crds/ and the chart).
crds:
	$(CARGO) run -q --bin palisade -- crds --write crds --write charts/palisade/crds

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

## Everything CI runs.
test: lint unit

demo: build
	./target/debug/palisade check --policy examples/policy.yaml examples/*.yaml
	./target/debug/palisade render examples/filesystem-stdio.yaml

clean:
	$(CARGO) clean
