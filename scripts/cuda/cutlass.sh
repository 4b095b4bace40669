#!/usr/bin/env bash
# candle-flash-attn's build clones NVIDIA/cutlass at a fixed commit, which fails offline.
# This places that commit where cudaforge looks for it, from a local clone or mirror of
# NVIDIA/cutlass given as $CUTLASS_GIT (any git repository holding the commit).
set -euo pipefail
source "$(dirname "$0")/env.sh"
commit=7d49e6c7e2f8896c47f586706e67e1fb215529dc
dest=$CUDAFORGE_HOME/git/checkouts/cutlass-${commit:0:16}
if [ "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" = "$commit" ]; then exit 0; fi
: "${CUTLASS_GIT:?set CUTLASS_GIT to a local git clone of NVIDIA/cutlass holding commit $commit}"
rm -rf "$dest"
git clone -q --no-checkout "$CUTLASS_GIT" "$dest"
git -C "$dest" sparse-checkout set include tools/util/include
git -C "$dest" -c advice.detachedHead=false checkout -q "$commit"
echo "cutlass $commit ready at $dest"
