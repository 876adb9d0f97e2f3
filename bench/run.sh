#!/usr/bin/env bash
# Runs otlp-collector (ours) and the OpenTelemetry Collector (peer) side by
# side, in ONE run, alternating A B A B with the same payloads and settings.
# Each server is pinned to one core (SERVER_CPU), the load generator to
# another (LOAD_CPU). Prints JSON lines to $OUT and a markdown table with the
# ratios ours/peer.
#
#   bash bench/run.sh                  # everything (~10 min)
#   SCENARIOS="max rate" bash bench/run.sh
#   DURATION=5s ROUNDS=1 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/otlp-fleet/target}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
SCENARIOS=${SCENARIOS:-"max http rate single gzip mtls forward overload"}
OUT=${OUT:-$(mktemp -d)/results.jsonl}
WORK=$(mktemp -d)
# Servers start inside $(...), so they are not jobs of this shell: track their pids.
trap 'kill $(jobs -p) $(cat "$WORK/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -q -p otlp-collector -p otlp-bench
bash e2e/tools/build-all.sh otelcol >/dev/null
OURS=$CARGO_TARGET_DIR/release/otlp-collector
LOAD=$CARGO_TARGET_DIR/release/otlp-load
. e2e/tools/versions.sh
PEER=$OTELCOL_BIN/otelcol-test
echo "ours: $OURS"; echo "peer: $PEER ($("$PEER" --version 2>/dev/null | head -1))"; echo "results: $OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Certificates for the mTLS scenario.
(cd "$WORK" && openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 30 -subj "/CN=bench CA" \
   -keyout ca.key -out ca.crt 2>/dev/null
 for who in server client; do
   openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=$who" -keyout $who.key -out $who.csr 2>/dev/null
   openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out $who.crt \
     -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
 done)

# $1 which (ours|peer), $2 port, $3 tls (0|1), $4 exporter target ("" = nop, else host:port to forward to), $5 memory MiB
# PROTOCOL=http serves OTLP/HTTP on the port instead of OTLP/gRPC.
config() {
  local which=$1 port=$2 tls=$3 fwd=$4 mem=${5:-512}
  if [ "$which" = ours ]; then
    if [ "${PROTOCOL:-grpc}" = http ]; then echo "receivers: {otlp: {grpc: null, http: {endpoint: \"127.0.0.1:$port\"}, max_message_bytes: 8388608"
    else echo "receivers: {otlp: {grpc: {endpoint: \"127.0.0.1:$port\"}, http: null, max_message_bytes: 8388608"; fi
    [ "$tls" = 1 ] && echo ", tls: {cert_file: $WORK/server.crt, key_file: $WORK/server.key, client_ca_file: $WORK/ca.crt}"
    echo "}}"
    echo "processors: {batch: {send_batch_size: 8192, timeout: 200ms}}"
    if [ -n "$fwd" ]; then echo "exporters: {otlp: {endpoint: \"http://$fwd\", compression: none}}"; exp=otlp
    else echo "exporters: {nop: {}}"; exp=nop; fi
    echo "service:"
    echo "  telemetry: {endpoint: null}"
    echo "  limits: {memory_limit_mib: $mem}"
    echo "  pipelines: {traces: {processors: [batch], exporters: [$exp]}, metrics: {processors: [batch], exporters: [$exp]}, logs: {processors: [batch], exporters: [$exp]}}"
  else
    if [ "${PROTOCOL:-grpc}" = http ]; then echo "receivers: {otlp: {protocols: {http: {endpoint: \"127.0.0.1:$port\", max_request_body_size: 8388608"
    else echo "receivers: {otlp: {protocols: {grpc: {endpoint: \"127.0.0.1:$port\", max_recv_msg_size_mib: 8"; fi
    [ "$tls" = 1 ] && echo ", tls: {cert_file: $WORK/server.crt, key_file: $WORK/server.key, client_ca_file: $WORK/ca.crt}"
    echo "}}}}"
    echo "processors: {memory_limiter: {check_interval: 1s, limit_mib: $mem, spike_limit_mib: $((mem / 4))}, batch: {send_batch_size: 8192, timeout: 200ms}}"
    if [ -n "$fwd" ]; then echo "exporters: {otlp_grpc: {endpoint: \"$fwd\", tls: {insecure: true}, compression: none}}"; exp=otlp_grpc
    else echo "exporters: {nop: {}}"; exp=nop; fi
    echo "service:"
    echo "  telemetry: {metrics: {level: none}, logs: {level: warn}}"
    echo "  pipelines: {traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [$exp]}, metrics: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [$exp]}, logs: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [$exp]}}"
  fi
}

start() { # which port tls fwd mem cpu -> pid
  local which=$1 port=$2 cpu=${6:-$SERVER_CPU} cfg="$WORK/$1-$2.yaml"
  config "$@" > "$cfg"
  if [ "$which" = ours ]; then RUST_LOG=warn taskset -c "$cpu" "$OURS" --config "$cfg" > "$WORK/$which-$port.log" 2>&1 &
  else taskset -c "$cpu" "$PEER" --config "$cfg" > "$WORK/$which-$port.log" 2>&1 & fi
  local pid=$! deadline=$((SECONDS + 30))
  echo $pid >> "$WORK/pids"
  until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$WORK/$which-$port.log" >&2; echo "$which did not start" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "$which did not listen in 30s" >&2; exit 1; }
    sleep 0.05
  done
  echo $pid
}

cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
rss_peak_kb() { awk '/VmHWM/ {print $2}' /proc/"$1"/status; }

# scenario which label load-args... ; server extras via TLS=1 FWD=host:port MEM=n
run() {
  local scenario=$1 which=$2; shift 2
  local port; port=$(free_port)
  local pid; pid=$(start "$which" "$port" "${TLS:-0}" "${FWD:-}" "${MEM:-512}")
  local t0; t0=$(cpu_ticks "$pid")
  local endpoint="http://127.0.0.1:$port" tls_args=()
  if [ "${TLS:-0}" = 1 ]; then
    endpoint="https://127.0.0.1:$port"
    tls_args=(--ca "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key")
  fi
  local json; json=$(taskset -c "$LOAD_CPU" "$LOAD" --endpoint "$endpoint" "${tls_args[@]}" --duration "$DURATION" --json "$@")
  local t1; t1=$(cpu_ticks "$pid"); local rss; rss=$(rss_peak_kb "$pid")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local hz; hz=$(getconf CLK_TCK)
  echo "$json" | python3 -c "import json,sys; r=json.load(sys.stdin); r.update(scenario='$scenario', server='$which', server_cpu_s=($t1-$t0)/$hz, rss_peak_mib=$rss/1024); print(json.dumps(r))" | tee -a "$OUT"
}

for round in $(seq 1 "$ROUNDS"); do
  for which in ours peer; do
    for s in $SCENARIOS; do
      case $s in
        max) for p in metrics10 metrics1000 spans100 logs100; do run max "$which" --profile $p --connections 8 --concurrency 8; done ;;
        http) for p in metrics10 spans100; do PROTOCOL=http run http "$which" --protocol http --profile $p --connections 8 --concurrency 8; done ;;
        rate) run rate-5000 "$which" --profile metrics10 --connections 4 --concurrency 16 --rate 5000 ;;
        single) for p in metrics10 metrics1000 spans100 logs100; do run single "$which" --profile $p --connections 1 --concurrency 1; done ;;
        gzip) run gzip "$which" --profile metrics1000 --connections 8 --concurrency 8 --gzip ;;
        mtls) TLS=1 run mtls "$which" --profile metrics10 --connections 8 --concurrency 8 ;;
        forward)
          sink_port=$(free_port); sink=$(start ours "$sink_port" 0 "" 2048 "$LOAD_CPU")
          FWD=127.0.0.1:$sink_port run forward "$which" --profile spans100 --connections 8 --concurrency 8
          kill -TERM "$sink"; wait "$sink" 2>/dev/null || true ;;
        overload) MEM=64 run overload-64MiB "$which" --profile metrics1000 --connections 16 --concurrency 16 ;;
      esac
    done
  done
done

python3 bench/summarize.py "$OUT"
