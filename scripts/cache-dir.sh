#!/usr/bin/env bash
# Prints the folder for downloads that outlive a clone (the CUDA toolkit wheels, Node binaries):
# $CANDLEWICK_CACHE, else $XDG_CACHE_HOME/candlewick, else ~/.cache/candlewick, so that CI, which
# runs in a fresh clone each time, downloads them once per machine. When that folder cannot be
# made or written, the clone's own .cache/ (git-ignored) instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CANDLEWICK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/candlewick}
if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
  echo "$dir"
else
  mkdir -p "$root/.cache"
  echo "$root/.cache"
fi
