#!/usr/bin/env python3
"""Per-kernel GPU time from an ncu CSV log.

Usage: tools/ncu_kernel_times.py NCU_LOG [TOP]

NCU_LOG is the stdout of `ncu --metrics gpu__time_duration.sum --csv --print-units base ...`
(other lines are skipped). Prints the TOP (default 40) kernels by summed time: milliseconds,
launches, share of the total, name (first 90 characters), then the total.
"""
import collections
import csv
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) == 3 else 40
    rows = [line for line in open(sys.argv[1]) if line.startswith('"')]
    ms, launches = collections.Counter(), collections.Counter()
    per_ms = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0}
    for r in csv.DictReader(rows):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            k = r["Kernel Name"][:90]
            ms[k] += float(r["Metric Value"].replace(",", "")) * per_ms.get(r["Metric Unit"], 1e-6)
            launches[k] += 1
    total = sum(ms.values())
    for k, v in ms.most_common(top):
        print(f"{v:10.2f} ms {launches[k]:6d}x {100 * v / total:5.1f}%  {k}")
    print(f"total {total:.1f} ms (everything the profiled process launched)")


if __name__ == "__main__":
    main()
