# Averages ncu --csv per-launch metrics by (kernel, grid): one line per group.
import csv, sys, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
g = collections.OrderedDict()
for r in csv.DictReader(rows):
    name = r.get("Kernel Name", "?")
    key = (name[:150], r.get("Grid Size", r.get("Grid Dimensions", "?")))
    d = g.setdefault(key, collections.defaultdict(list))
    try:
        d[r["Metric Name"] + " [" + r["Metric Unit"] + "]"].append(float(r["Metric Value"].replace(",", "")))
    except (ValueError, KeyError):
        pass
for (name, grid), d in g.items():
    n = max((len(v) for v in d.values()), default=0)
    print(f"{name} grid {grid} x{n}")
    for m, v in d.items():
        print(f"    {m}: {sum(v) / len(v):.4g}")
