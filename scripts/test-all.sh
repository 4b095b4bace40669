#!/usr/bin/env bash
# The README's test command: set up, then run every CPU test suite (Rust core, the
# TypeScript package with ava, the Node/Bun/Deno smoke through ava) and a type check of the
# CUDA build (counted as one test), and close with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

logs=$(mktemp -d)
status=0

echo "== cargo test (candlewick-core)"
cargo test --release -p candlewick-core 2>&1 | tee "$logs/cargo.log" || status=1

echo "== ava (package, CLI, runtimes)"
npx ava 2>&1 | tee "$logs/ava.log" || status=1

echo "== cargo check of the CUDA build (scripts/cuda/check.sh: CUDA 13.0 toolkit from PyPI, no GPU needed)"
if bash scripts/cuda/check.sh > "$logs/cuda-check.log" 2>&1; then
  cuda_check=1
  tail -1 "$logs/cuda-check.log"
else
  cuda_check=0; status=1
  # The reason, not just cargo's last line: errors, failed tools, then the log's end and the free disk.
  echo "cuda check FAILED; its errors:"
  grep -E -A12 '^error|panicked|toolkit.sh:|env.sh:|No space left|ERROR' "$logs/cuda-check.log" | head -80
  echo "-- last lines of the log:"
  tail -15 "$logs/cuda-check.log"
  echo "-- free disk: $(df -h --output=avail . | tail -1)"
fi

passed=0; failed=0
# cargo: "test result: ok. 12 passed; 0 failed; ..."
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$logs/cargo.log")
# ava: "  42 tests passed" / "  1 test failed"
ava_passed=$(sed -n 's/^ *\([0-9]*\) tests\{0,1\} passed.*/\1/p' "$logs/ava.log" | tail -1)
# With failures ava prints no "N tests passed" line: count the passed tests' marks instead.
[ -n "$ava_passed" ] || ava_passed=$(grep -c '✔' "$logs/ava.log")
ava_failed=$(sed -n 's/^ *\([0-9]*\) tests\{0,1\} failed.*/\1/p' "$logs/ava.log" | tail -1)
passed=$((passed + ${ava_passed:-0} + cuda_check)); failed=$((failed + ${ava_failed:-0} + 1 - cuda_check))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
exit $status
