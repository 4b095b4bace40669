#!/usr/bin/env bash
# The README's first command: set up, then draw eight prompts with the small trained model bundled in the
# package (test/fixtures/shapes-sd: shapes in named colours, positions and sizes) into one grid PNG, so the
# words can be seen steering the picture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo.png}
node dist/cli/main.js demo --out "$out"
echo "demo: wrote $out"
