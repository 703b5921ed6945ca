#!/usr/bin/env python3
"""Time two relspec binaries alternately, one process at a time, so a machine
whose speed drifts affects both alike. Each binary runs in its own workspace
(generate both with `relspec synth DIR --rules N` and build them once first).

  python3 benches/alternate.py BASE_BIN BASE_DIR THIS_BIN THIS_DIR [--runs 15] [--edit RULE] -- ARGS...

With --edit RULE (a rule of the synth workspaces, e.g. r04999), each run first
rewrites rules/RULE.sql with a new variant, so ARGS (e.g. `build --json`)
measure a one-rule edit. Prints the median and minimum wall time of each.
"""
import argparse, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("base_bin"); ap.add_argument("base_dir"); ap.add_argument("this_bin"); ap.add_argument("this_dir")
ap.add_argument("--runs", type=int, default=15)
ap.add_argument("--edit")
argv = sys.argv[1:]
split = argv.index("--") if "--" in argv else len(argv)
a = ap.parse_args(argv[:split])
args = argv[split + 1 :]
times = {"base": [], "this": []}
for i in range(a.runs):
    for name, binary, d in (("base", a.base_bin, a.base_dir), ("this", a.this_bin, a.this_dir)):
        if a.edit:
            up = f"r{int(a.edit[1:]) - 1:05d}"
            with open(f"{d}/rules/{a.edit}.sql", "w") as f:
                f.write(f"SELECT kind, n + {i + 1} AS n FROM {up}\n")
        t = time.perf_counter()
        subprocess.run([binary] + args, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times[name].append((time.perf_counter() - t) * 1000)
for name in ("base", "this"):
    print(f"{name}: median {statistics.median(times[name]):.1f} ms, min {min(times[name]):.1f} ms ({a.runs} runs)")
