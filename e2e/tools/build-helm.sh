#!/usr/bin/env bash
# Build helm v4 with `go install` into $HELM_BIN.
set -euo pipefail
. "$(dirname "$0")/versions.sh"
OUT=$HELM_BIN
if [ -x "$OUT/helm" ]; then echo "helm $HELM_VERSION: cached in $OUT"; exit 0; fi
start=$(date +%s)
mkdir -p "$OUT.tmp"
CGO_ENABLED=0 GOBIN="$OUT.tmp" nice -n 10 go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
echo "helm $HELM_VERSION: built in $(( $(date +%s) - start ))s into $OUT"
