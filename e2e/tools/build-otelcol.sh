#!/usr/bin/env bash
# Build the OpenTelemetry Collector benchmark peer `otelcol-test` (core $OTELCOL_VERSION: otlp receiver,
# batch + memory_limiter processors, debug/nop/otlp exporters, gRPC gzip) into $OTELCOL_BIN through a wrapper module.
set -euo pipefail
. "$(dirname "$0")/versions.sh"
OUT=$OTELCOL_BIN
if [ -x "$OUT/otelcol-test" ]; then echo "otelcol-test $OTELCOL_VERSION: cached in $OUT"; exit 0; fi
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; cd "$W"
cat > main.go <<'EOM'
// otelcol-test: a minimal OpenTelemetry Collector used as the benchmark peer.
package main

import (
	"os"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/nopexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"

	// Registers gRPC's gzip codec, as the collector distributions do: without
	// it the otlp receiver answers gzip requests UNIMPLEMENTED.
	_ "google.golang.org/grpc/encoding/gzip"
)

func components() (otelcol.Factories, error) {
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](batchprocessor.NewFactory(), memorylimiterprocessor.NewFactory()); err != nil {
		return f, err
	}
	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](debugexporter.NewFactory(), nopexporter.NewFactory(), otlpexporter.NewFactory())
	return f, err
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol-test", Description: "otlp-fleet benchmark peer", Version: "VERSION"},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{ResolverSettings: confmap.ResolverSettings{
			ProviderFactories: []confmap.ProviderFactory{envprovider.NewFactory(), fileprovider.NewFactory(), yamlprovider.NewFactory()},
		}},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
EOM
sed -i "s/\"VERSION\"/\"${OTELCOL_VERSION#v}\"/" main.go
start=$(date +%s)
go mod init local.test/otelcol-test 2>/dev/null
C=go.opentelemetry.io/collector
go get "$C/otelcol@$OTELCOL_VERSION" "$C/service@$OTELCOL_VERSION" \
  "$C/receiver/otlpreceiver@$OTELCOL_VERSION" "$C/processor/batchprocessor@$OTELCOL_VERSION" \
  "$C/processor/memorylimiterprocessor@$OTELCOL_VERSION" "$C/exporter/debugexporter@$OTELCOL_VERSION" \
  "$C/exporter/nopexporter@$OTELCOL_VERSION" "$C/exporter/otlpexporter@$OTELCOL_VERSION" \
  "$C/confmap/provider/envprovider@$OTELCOL_STABLE_VERSION" "$C/confmap/provider/fileprovider@$OTELCOL_STABLE_VERSION" \
  "$C/confmap/provider/yamlprovider@$OTELCOL_STABLE_VERSION"
go mod tidy
grep -m1 '^go ' go.mod
mkdir -p "$OUT.tmp"
CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$OUT.tmp/otelcol-test" .
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
echo "otelcol-test $OTELCOL_VERSION: built in $(( $(date +%s) - start ))s into $OUT"
