#!/usr/bin/env bash
# Installs and starts what repro's tests and demo need on a Debian machine, idempotently:
# Debian packages, a running dockerd, the pinned MinIO server, and the local test images.
# Nothing here is pulled from a container registry.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${REPRO_TOOLS:-/opt/repro-tools/bin}
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # the MinIO repo has no tags; pinned pseudo-version
export DEBIAN_FRONTEND=noninteractive
say() { printf 'deps: %s\n' "$*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages.
pkgs=(docker.io busybox-static make git curl ca-certificates)
pkgs+=(debootstrap)   # scripts/base-torch.sh: the cpu-torch environment's local base
pkgs+=(chromium)      # headless browser: screenshot tests of the HTML pages (service/pages, testenv.Chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. A running Docker engine.
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /tmp/repro-dockerd.log)"
  sudo_ sh -c 'nohup dockerd >/tmp/repro-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start:"; tail -20 /tmp/repro-dockerd.log >&2; exit 1; }
fi

# 3. MinIO, built from source at a pinned version (skip when present).
if [ ! -x "$TOOLS/minio" ]; then
  say "building MinIO $MINIO_VERSION into $TOOLS (takes minutes the first time)"
  mkdir -p "$TOOLS"
  (cd /tmp && GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION")
fi

# 4. The local test images.
scripts/test-images.sh
say "ready: dockerd $(docker version --format '{{.Server.Version}}'), minio at $TOOLS/minio"
