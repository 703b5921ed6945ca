#!/usr/bin/env bash
# Run the benchmarks of another checkout (e.g. the previous commit) and of this
# one alternately, in one run, so their figures are comparable on a machine
# whose speed drifts. Usage:
#   git worktree add /tmp/base <commit>
#   benches/side_by_side.sh /tmp/base [BASE_TARGET_DIR]
# The base checkout builds into BASE_TARGET_DIR (default: $HOME/.cache/relspec-target-base);
# this one into CARGO_TARGET_DIR. Sizes: RELSPEC_BENCH_SIZES as for each bench.
set -euo pipefail
base=$(cd "$1" && pwd)
base_target=${2:-$HOME/.cache/relspec-target-base}
here=$(cd "$(dirname "$0")/.." && pwd)
benches=${BENCHES:-rebuild check watch}
rounds=${ROUNDS:-2}
for b in $benches; do
  for r in $(seq 1 "$rounds"); do
    echo "## $b, round $r: base ($(git -C "$base" rev-parse --short HEAD))"
    (cd "$base" && CARGO_TARGET_DIR="$base_target" cargo bench -q --profile dev --bench "$b" 2>/dev/null)
    echo "## $b, round $r: this checkout ($(git -C "$here" rev-parse --short HEAD))"
    (cd "$here" && cargo bench -q --profile dev --bench "$b" 2>/dev/null)
  done
done
