#!/usr/bin/env bash
# Build every binary the e2e tests and benchmarks need from the Go module proxy, once per machine,
# cached by version under $HOME/.cache/otlp-fleet/bin/<tool>-<version>/. Idempotent: cached tools are skipped.
#   bash e2e/tools/build-all.sh            # etcd, k8s (apiserver, controller-manager, scheduler, kubectl), kwok, helm, otelcol-test
#   bash e2e/tools/build-all.sh etcd k8s   # only some
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/versions.sh"
TOOLS=${*:-etcd k8s kwok helm otelcol}
command -v go >/dev/null || { echo "build-all: go is not installed" >&2; exit 1; }
echo "build-all: $(go version), GOTOOLCHAIN=$GOTOOLCHAIN, cache $BIN_ROOT"
total=$(date +%s)
for t in $TOOLS; do
  s=$(date +%s)
  bash "$DIR/build-$t.sh"
  echo "build-all: $t took $(( $(date +%s) - s ))s"
done
echo "build-all: done in $(( $(date +%s) - total ))s"
