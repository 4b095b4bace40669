#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for bench/gpu/run.sh on the GPU test machine, which has no node,
# no Rust and no diffusers: the CUDA .node, this machine's node, diffusers' wheel, copies of
# ../shared/bench's diffusers scripts (and with WITH_ATTENTION=1 the attention benchmark); all
# compressed (the call carries at most 64 MiB). Then:
#   device tool: run  command="bash bench/gpu/run.sh"  carry=[".gpu", "dist", "node_modules/pngjs/lib", "node_modules/pngjs/package.json"]
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu
mkdir -p $G/whl
npm run --silent build:ts
bash scripts/cuda/build.sh
xz -T2 -6 -c npm/linux-x64-gnu-cuda/candlewick.linux-x64-gnu-cuda.node > $G/candlewick.node.xz
# -9e: the tracked tree and .gpu/ together are close to the call's 64 MiB (bench/NOTES.md, run 34).
[ -f $G/node.xz ] || xz -T2 -9e -c "$(command -v node)" > $G/node.xz
ls $G/whl/diffusers-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: -d $G/whl diffusers==0.42.1
cp ../shared/bench/anchor_diffusers.py ../shared/bench/anchor_phases.py $G/
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- crates src bench || echo ' + uncommitted changes')" > $G/commit
rm -f $G/attention_bench.xz $G/full_size_check.xz
if [ "${WITH_ATTENTION:-0}" = 1 ]; then
  # A folder of its own for PART=c: the benchmark does not fit one call's 64 MiB beside node,
  # the .node and the fixtures.
  bash scripts/cuda/examples.sh
  mkdir -p .gpu-attention/whl
  xz -T2 -6 -c target/cuda/release/examples/attention_bench > .gpu-attention/attention_bench.xz
  cp ../shared/bench/anchor_phases.py ../shared/bench/anchor_diffusers.py .gpu-attention/
  cp .gpu/whl/*.whl .gpu-attention/whl/
  git rev-parse HEAD > .gpu-attention/commit
fi
du -ch $G/* dist node_modules/pngjs/lib node_modules/pngjs/package.json | tail -1
