#!/usr/bin/env bash
# The README's first command: set up, then generate a demo image with the small model
# bundled in the package (random weights, so the picture is abstract: it proves the whole
# path from prompt to PNG works).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo.png}
node dist/cli/main.js generate "a photo of an astronaut riding a horse on mars" --steps 20 --seed 42 --out "$out"
echo "demo: wrote $out"
