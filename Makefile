# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build tools test lint unit conformance e2e fuzz soak crds docs manifests fmt demo clean

all: build

build:
	$(CARGO) build --workspace

## Build (once, cached under ~/.cache/palisade) the upstream tools the tests run for real.
tools:
	e2e/tools build all

## Regenerate the committed CRDs from the Rust types (crds/ and the chart).
crds:
	$(CARGO) run -q --bin palisade -- crds --write crds --write charts/palisade/files/crds

## Regenerate the field reference in docs/api.md from the CRD schemas.
docs:
	$(CARGO) run -q --bin palisade -- crds --update-docs docs/api.md

## Render plain install manifests from the chart (CRDs included) into manifests/install.yaml, for
## images pinned by digest: make manifests OPERATOR_IMAGE=REPO@sha256:... GATEWAY_IMAGE=REPO@sha256:...
manifests: tools
	@[ -n "$(OPERATOR_IMAGE)" ] && [ -n "$(GATEWAY_IMAGE)" ] || { echo "make manifests: set OPERATOR_IMAGE and GATEWAY_IMAGE (images pinned by digest, e.g. from e2e/images)" >&2; exit 2; }
	$$(e2e/tools path helm) template palisade charts/palisade --namespace palisade-system --kube-version 1.33.0 \
	  --set operator.image=$(OPERATOR_IMAGE) --set gateway.image=$(GATEWAY_IMAGE) > manifests/install.yaml

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p palisade-e2e --test nodes --test faults -- -D warnings

unit:
	$(CARGO) test --workspace --exclude palisade-e2e

## The MCP conformance suite's server scenarios, directly against the fixture server and
## through the gateway; fails when a check passes directly but not through the gateway.
conformance:
	$(CARGO) build -p palisade-gateway
	e2e/conformance/run

## End-to-end tests on a local control plane that is started for the run and stopped after it.
e2e: tools
	e2e/run-tests

## Coverage-guided fuzzing (cargo-fuzz, nightly) of every target in fuzz/, FUZZ_SECONDS each
## (default 60); corpora grow under ~/.cache/palisade/fuzz. Not part of `make test`.
fuzz:
	e2e/fuzz

## A bounded soak of the gateway under mixed traffic (PALISADE_SOAK_SECONDS, default 600):
## memory and descriptors sampled, the audit log checked against the requests. Not part of `make test`.
soak:
	$(CARGO) bench -p palisade-gateway --bench soak

## Everything CI runs.
test: tools lint unit conformance e2e

## The main job: Palisade on a local control plane (or on $KUBECONFIG's cluster when set).
demo: tools build
	e2e/demo

clean:
	$(CARGO) clean
