#!/usr/bin/env bash
# Everything a fresh clone needs before the demo or the tests: npm packages (bun and deno
# included), the native addon (CPU build) and the compiled TypeScript. Safe to rerun: each
# step is skipped when its output is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. Install Rust (https://rustup.rs) to build the native addon from source." >&2
  exit 1
fi

echo "setup: building the native addon (release, CPU)"
npm run --silent build:native

echo "setup: compiling TypeScript"
npm run --silent build:ts
