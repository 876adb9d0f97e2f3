#!/usr/bin/env python3
"""Sends spans, metrics and logs with the Python OpenTelemetry SDK.

Used by tests/python_sdk.rs. Everything is flushed before exit; the exit
status is non-zero if any export failed, so the caller knows the collector
did not acknowledge what this script sent.

  send_otlp.py --protocol grpc --endpoint http://127.0.0.1:4317 \
      --service NAME --spans N --metric-points N --logs N

Over TLS, give an https:// endpoint and --ca (the CA that signed the
collector's certificate); for mutual TLS also --cert and --key (the client
certificate and its key, PEM). The server certificate must name the host
of the endpoint, or the name given with --server-name (gRPC only).

Span i is named "py-op-<i>"; the counter "py.requests" has a data point
{route="/r<i>"} = 10*(i+1); log record i has the body "py line <i>".
Exit status: 0 all exported, 1 an export failed, 2 the SDK is not installed.
"""

import argparse
import math
import sys

try:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
    from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
    from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
except ImportError as e:
    print(f"send_otlp.py: the OpenTelemetry SDK is missing ({e}); "
          "run: pip install -r tests/python/requirements.txt", file=sys.stderr)
    sys.exit(2)

FAILURES = []


def checked(exporter, what, success):
    """Records every export of `exporter` whose result is not `success`.

    The SDK's processors log export failures and carry on; a test needs them
    in the exit status.
    """
    inner = exporter.export

    def export(*args, **kwargs):
        try:
            result = inner(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure is a failed export
            FAILURES.append(f"{what}: {e!r}")
            raise
        if result != success:
            FAILURES.append(f"{what}: export returned {result}")
        return result

    exporter.export = export
    return exporter


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exporters(args):
    """(span, metric, log) exporters for `args.protocol`, each checked."""
    protocol, endpoint, compression, timeout = args.protocol, args.endpoint, args.compression, args.timeout
    tls = args.ca is not None
    if protocol == "grpc":
        comp = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        kw = dict(endpoint=endpoint, compression=comp, timeout=timeout)
        if tls:
            kw["insecure"] = False
            kw["credentials"] = grpc.ssl_channel_credentials(
                root_certificates=read(args.ca),
                private_key=read(args.key) if args.key else None,
                certificate_chain=read(args.cert) if args.cert else None,
            )
            if args.server_name:
                kw["channel_options"] = (("grpc.ssl_target_name_override", args.server_name),)
        else:
            kw["insecure"] = True
        spans = grpc_traces.OTLPSpanExporter(**kw)
        metrics = grpc_metrics.OTLPMetricExporter(**kw)
        logs = grpc_logs.OTLPLogExporter(**kw)
    else:
        comp = HttpCompression.Gzip if compression == "gzip" else HttpCompression.NoCompression
        base = endpoint.rstrip("/")
        kw = dict(compression=comp, timeout=timeout)
        if tls:
            kw.update(certificate_file=args.ca, client_certificate_file=args.cert, client_key_file=args.key)
        spans = http_traces.OTLPSpanExporter(endpoint=f"{base}/v1/traces", **kw)
        metrics = http_metrics.OTLPMetricExporter(endpoint=f"{base}/v1/metrics", **kw)
        logs = http_logs.OTLPLogExporter(endpoint=f"{base}/v1/logs", **kw)
    return (
        checked(spans, "spans", SpanExportResult.SUCCESS),
        checked(metrics, "metrics", MetricExportResult.SUCCESS),
        checked(logs, "logs", LogRecordExportResult.SUCCESS),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["grpc", "http/protobuf"], required=True)
    parser.add_argument("--endpoint", required=True, help="http://host:port or https://host:port (no /v1/... path)")
    parser.add_argument("--service", required=True, help="the service.name resource attribute")
    parser.add_argument("--spans", type=int, required=True)
    parser.add_argument("--metric-points", type=int, required=True)
    parser.add_argument("--logs", type=int, required=True)
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--timeout", type=float, default=10, help="seconds per export, retries included")
    parser.add_argument("--ca", metavar="FILE", help="TLS: PEM CA certificate(s) to verify the collector with")
    parser.add_argument("--cert", metavar="FILE", help="mTLS: PEM client certificate chain (needs --ca and --key)")
    parser.add_argument("--key", metavar="FILE", help="mTLS: PEM private key of --cert")
    parser.add_argument("--server-name", help="gRPC over TLS: the name to check the server certificate for "
                        "instead of the endpoint's host")
    args = parser.parse_args()
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.cert is not None and args.ca is None:
        parser.error("--cert needs --ca")
    if args.ca is not None and not args.endpoint.startswith("https://"):
        parser.error("--ca needs an https:// endpoint")

    resource = Resource.create({"service.name": args.service, "test.language": "python"})
    span_exporter, metric_exporter, log_exporter = exporters(args)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    # An infinite interval: no background exports, exactly one on force_flush.
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=math.inf)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))

    tracer = tracer_provider.get_tracer("python-sdk-test")
    for i in range(args.spans):
        with tracer.start_as_current_span(f"py-op-{i}") as span:
            span.set_attribute("op.index", i)

    counter = meter_provider.get_meter("python-sdk-test").create_counter("py.requests")
    for i in range(args.metric_points):
        counter.add(10 * (i + 1), {"route": f"/r{i}"})

    logger = logger_provider.get_logger("python-sdk-test")
    for i in range(args.logs):
        logger.emit(severity_number=SeverityNumber.WARN, severity_text="WARN", body=f"py line {i}")

    flushed = {
        "spans": tracer_provider.force_flush(30_000),
        "metrics": meter_provider.force_flush(30_000),
        "logs": logger_provider.force_flush(30_000),
    }
    for what, ok in flushed.items():
        if not ok:
            FAILURES.append(f"{what}: force_flush timed out")
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()

    if FAILURES:
        print("send_otlp.py: export failed:\n  " + "\n  ".join(FAILURES), file=sys.stderr)
        return 1
    print(f"sent {args.spans} spans, {args.metric_points} data points, {args.logs} log records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
