#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the Go module proxy
# into $K8S_BIN, through a throwaway wrapper module that replaces every staging module with its tag.
set -euo pipefail
. "$(dirname "$0")/versions.sh"
OUT=$K8S_BIN
BINS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
missing=0; for b in $BINS; do [ -x "$OUT/$b" ] || missing=1; done
if [ $missing = 0 ]; then echo "k8s $K8S_VERSION: cached in $OUT"; exit 0; fi
MINOR=${K8S_VERSION#v1.}; MINOR=${MINOR%%.*}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; cd "$W"
KMOD=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[ -f "$KMOD" ] || { echo "cannot download k8s.io/kubernetes@$K8S_VERSION go.mod" >&2; exit 1; }
{ echo "module local.test/k8sbin"; echo; grep -m1 '^go ' "$KMOD"; grep '^godebug' "$KMOD" || true
  echo; echo "require k8s.io/kubernetes $K8S_VERSION"; echo; echo "replace ("
  sed -n "s#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/src/k8s\.io/.*#\t\1 => \1 $K8S_STAGING_VERSION#p" "$KMOD"; echo ")"; } > go.mod
if grep '=>' "$KMOD" | grep -v './staging/' >&2; then echo "WARN: non-staging replace above" >&2; fi
LDF="-s -w"; for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"; done
mkdir -p "$OUT.tmp"
start=$(date +%s)
CGO_ENABLED=0 nice -n 10 go build -mod=mod -trimpath -ldflags "$LDF" -o "$OUT.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
echo "k8s $K8S_VERSION: built in $(( $(date +%s) - start ))s into $OUT"
