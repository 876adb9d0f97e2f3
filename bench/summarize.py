#!/usr/bin/env python3
"""Summarises bench/run.sh results: medians per (scenario, profile, server), ratios ours/peer."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = defaultdict(list)
for r in rows:
    groups[(r["scenario"], r["profile"], r["server"])].append(r)


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def cpu_per_million(rs):
    return statistics.median(r["server_cpu_s"] / max(r["items_per_s"] * r["duration_s"] / 1e6, 1e-9) for r in rs)


print("| scenario | profile | server | req/s | items/s | p50 ms | p99 ms | p99.9 ms | CPU s / M items | peak RSS MiB | errors |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
keys = sorted({(s, p) for s, p, _ in groups}, key=lambda k: (k[0], k[1]))
for s, p in keys:
    for server in ("ours", "peer"):
        rs = groups.get((s, p, server))
        if not rs:
            continue
        errs = defaultdict(int)
        for r in rs:
            for k, v in r["errors"].items():
                errs[k] += v
        print(f"| {s} | {p} | {server} | {med(rs,'req_per_s'):,.0f} | {med(rs,'items_per_s'):,.0f} | {med(rs,'p50_ms'):.2f} | "
              f"{med(rs,'p99_ms'):.2f} | {med(rs,'p999_ms'):.2f} | {cpu_per_million(rs):.2f} | {max(r['rss_peak_mib'] for r in rs):.0f} | "
              f"{dict(errs) or '-'} |")
print()
print("| scenario | profile | throughput ours/peer | CPU per item peer/ours | p99 peer/ours |")
print("|---|---|---:|---:|---:|")
for s, p in keys:
    a, b = groups.get((s, p, "ours")), groups.get((s, p, "peer"))
    if not a or not b:
        continue
    if med(b, "items_per_s") == 0 or med(a, "items_per_s") == 0:
        print(f"| {s} | {p} | n/a: a server accepted nothing | | |")
        continue
    print(f"| {s} | {p} | {med(a,'items_per_s')/max(med(b,'items_per_s'),1e-9):.2f}x | "
          f"{cpu_per_million(b)/max(cpu_per_million(a),1e-9):.2f}x | {med(b,'p99_ms')/max(med(a,'p99_ms'),1e-9):.2f}x |")
