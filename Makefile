# repro's entry points. `make test` is what CI runs (.ci/run); `make demo` starts a demo.
GO ?= go
export REPRO_MINIO_BIN ?= /opt/repro-tools/bin/minio

.PHONY: test deps check-generated vet demo demo-stop bench build

build:
	$(GO) build -o bin/repro ./cmd/repro

deps:
	scripts/deps.sh

# The generated API code must match openapi.yaml.
check-generated:
	$(GO) generate ./openapi
	@git diff --quiet -- openapi || { echo "openapi/openapi.gen.go is stale: run 'go generate ./openapi' and commit" >&2; git diff --stat -- openapi; exit 1; }

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:" >&2; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Every test, against the real Docker engine and MinIO (missing either fails, not skips).
# The dockerd-restart test runs last and alone: it restarts the machine's engine.
test: deps check-generated vet
	REPRO_TEST_REQUIRE=docker,minio,browser,firewall $(GO) test -race -count=1 -timeout 45m ./...
	REPRO_TEST_REQUIRE=docker,minio REPRO_TEST_DOCKERD_RESTART=1 $(GO) test -count=1 -run TestDockerdRestartedDuringARun -v ./e2e

demo: deps build
	scripts/demo.sh

demo-stop:
	scripts/demo.sh stop

# Benchmarks with their baselines measured in the same run (ratios in the output).
bench: deps build
	scripts/bench.sh
