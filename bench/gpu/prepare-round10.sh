#!/usr/bin/env bash
# Prepares, on the development machine, everything issue 21's one run (bench/gpu/round10.sh) carries, into the
# git-ignored .gpu/ of this checkout:
#   .gpu/pkg    the packages as users get them: a fresh clone of HEAD built with `npm run build` and
#               `npm run build:cuda` (about 35 min on 2 cores), packed by scripts/pack.mjs (the main and CUDA
#               tarballs; the CPU one is dropped: the call carries at most 64 MiB), pngjs's tarball, and the
#               clone's commit as commit.txt
#   .gpu/node.xz, .gpu/whl (diffusers' wheel), .gpu/anchor_diffusers.py: what PART=fill needs
# Needs CUTLASS_GIT, a local clone of NVIDIA/cutlass (the library tool `fetch github:NVIDIA/cutlass` makes one under
# /work/.mirror/NVIDIA+cutlass/repo), as scripts/cuda/build.sh does. Prints the carries' sizes at the end.
#   CUTLASS_GIT=/work/.mirror/NVIDIA+cutlass/repo bash bench/gpu/prepare-round10.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
: "${CUTLASS_GIT:?set CUTLASS_GIT to a local clone of NVIDIA/cutlass (see scripts/cuda/cutlass.sh)}"
G=$root/.gpu
mkdir -p "$G/whl"
[ -f "$G/node.xz" ] || xz -T2 -9e -c "$(command -v node)" > "$G/node.xz"
ls "$G"/whl/diffusers-*.whl > /dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: -d "$G/whl" diffusers==0.42.1
cp ../shared/bench/anchor_diffusers.py "$G/"

clone=$(mktemp -d /tmp/round10-clone-XXXX)
git clone -q "$root" "$clone"
cd "$clone"
echo "prepare-round10: building $(git rev-parse --short HEAD) in $clone"
npm ci --ignore-scripts
npm run build
CUTLASS_GIT=$CUTLASS_GIT npm run build:cuda
rm -rf "$G/pkg" && mkdir -p "$G/pkg"
node scripts/pack.mjs --out "$G/pkg"
rm -f "$G"/pkg/candlewick-linux-x64-gnu-[0-9]*.tgz
(cd "$G/pkg" && npm pack --silent pngjs > /dev/null)
git rev-parse HEAD > "$G/pkg/commit.txt"
cd "$root"
rm -rf "$clone"
ls -l "$G/pkg"
du -ch "$G/pkg" | tail -1
du -ch "$G/node.xz" "$G/whl" "$G/anchor_diffusers.py" | tail -1
