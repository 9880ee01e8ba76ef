# token-rotator. `make test` runs every test, real Vault included; `make demo` shows a rotation.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test demo vault reliability bench mutants chart-docs clean

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/token-rotator .

# A vault binary for the tests: from PATH, the cache, or built once per machine (8-20 minutes).
vault:
	@scripts/vault-bin

test:
	@scripts/test

bench:
	@scripts/bench

mutants:
	@scripts/mutants

reliability:
	@scripts/reliability

demo:
	@scripts/demo

# The Helm chart's README (its values table) from charts/token-rotator/values.yaml, with helm-docs.
chart-docs:
	cd charts && go tool helm-docs --skip-version-footer --sort-values-order file --chart-search-root .

clean:
	rm -rf bin
