#!/usr/bin/env bash
# The README's test command: set up, then run every CPU test suite (Rust core; the TypeScript
# package with ava, which includes the Node/Bun/Deno smoke and the tarball install; a smaller ava
# run, pipeline and CLI, on each other supported Node line) and the CUDA build check (counted as
# one test), and close with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
# Each phase's header says how long the run has taken so far (minutes:seconds).
phase() { printf '== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
# Downloads that outlive the clone (scripts/cache-dir.sh), started now so they overlap the
# build: the CUDA toolkit wheels (check.sh waits for this install through toolkit.sh's lock),
# the Node releases and Chromium.
bash scripts/cuda/toolkit.sh > "$logs/toolkit.log" 2>&1 &
bash scripts/node-runtimes.sh > "$logs/node-runtimes.txt" 2> "$logs/node-runtimes.log" &
runtimes_pid=$!
# The page test's headless Chromium (Debian's, unpacked without root; test/page.test.ts asks
# scripts/chromium.sh again, which waits for this one through its lock).
bash scripts/chromium.sh > "$logs/chromium.log" 2>&1 &

bash scripts/setup.sh || { wait; echo "0 passed, 1 failed"; exit 1; }
status=0
passed=0; failed=0

# The core's tests reuse the addon's build instead of compiling candle a second time: napi builds
# with `--target <host>` (artefacts in target/<host>/release, not target/release), and with
# candlewick-node selected too (it has no tests) cargo resolves the same dependency features as
# napi's `-p candlewick-node` build (on its own, the core's build differs in syn's features, and
# everything above syn would be rebuilt).
host=$(rustc -vV | sed -n 's/^host: //p')
phase "cargo test (candlewick-core, --target $host)"
cargo test --release --target "$host" -p candlewick-core -p candlewick-node 2>&1 | tee "$logs/cargo.log" || status=1
# cargo: "test result: ok. 12 passed; 0 failed; ..."
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$logs/cargo.log")

# ava's summary: "  42 tests passed" / "  1 test failed"; with failures ava prints no "passed"
# line, so the passed tests' marks are counted instead.
count_ava() {
  local p f
  p=$(sed -n 's/^ *\([0-9]*\) tests\{0,1\} passed.*/\1/p' "$1" | tail -1)
  [ -n "$p" ] || p=$(grep -c '✔' "$1")
  f=$(sed -n 's/^ *\([0-9]*\) tests\{0,1\} failed.*/\1/p' "$1" | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}

phase "ava (package, CLI, runtimes, tarball install) on Node $(node --version)"
npx ava 2>&1 | tee "$logs/ava.log" || status=1
count_ava "$logs/ava.log"

# The other supported Node lines: the pipeline and the CLI (the full suite runs above, on the
# Node that runs this script).
wait "$runtimes_pid" || { echo "node-runtimes FAILED:"; cat "$logs/node-runtimes.log"; status=1; failed=$((failed + 1)); }
this_major=$(node -p 'process.versions.node.split(".")[0]')
while read -r version node; do
  [ "${version%%.*}" = "$this_major" ] && continue
  phase "ava (pipeline, CLI) on Node $version"
  "$node" node_modules/ava/entrypoints/cli.mjs test/pipeline.test.ts test/cli.test.ts > "$logs/ava-$version.log" 2>&1 || status=1
  tail -4 "$logs/ava-$version.log"
  count_ava "$logs/ava-$version.log"
done < "$logs/node-runtimes.txt"

phase "CUDA build check (scripts/cuda/check.sh: the .node built with cuda,cudnn against the CUDA 13.0 toolkit from PyPI, its links checked; no GPU needed)"
wait
if bash scripts/cuda/check.sh > "$logs/cuda-check.log" 2>&1; then
  passed=$((passed + 1))
  grep '^check-links' "$logs/cuda-check.log"
  tail -1 "$logs/cuda-check.log"
else
  failed=$((failed + 1)); status=1
  # The reason, not just cargo's last line: errors, failed tools, then the log's end and the free disk.
  echo "cuda check FAILED; its errors:"
  grep -E -A12 '^error|panicked|toolkit.sh:|env.sh:|check-links:|No space left|ERROR' "$logs/cuda-check.log" | head -80
  echo "-- last lines of the log (and of the toolkit install):"
  tail -15 "$logs/cuda-check.log"
  tail -5 "$logs/toolkit.log"
  echo "-- free disk: $(df -h --output=avail . | tail -1)"
fi

phase "done"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
exit $status
