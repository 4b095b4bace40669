# Sourced by bench/gpu/families.sh, lora-row.sh and best.sh on the GPU machine: the repository root as the
# working folder, $OUT and /tmp/cw (W), the carried node, diffusers wheel and candlewick build unpacked once a
# machine (.gpu/node.xz, .gpu/whl, .gpu/fam/{candlewick.node.xz, dist/, full_size_check.xz} where carried),
# the addon loaded as CANDLEWICK_NATIVE_LIBRARY_PATH, dist/ from the carried one, `stage`, and the card's name
# in $OUT/gpu.txt.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/candlewick-out}; W=/tmp/cw
mkdir -p $W "$OUT"; export PATH=$W:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONPATH=/tmp/site
[ -x $W/node ] || { xz -dc .gpu/node.xz > $W/node && chmod +x $W/node; }
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl 2>/dev/null
[ -x $W/full_size_check ] || [ ! -f .gpu/fam/full_size_check.xz ] || { xz -dc .gpu/fam/full_size_check.xz > $W/full_size_check && chmod +x $W/full_size_check; }
[ -f $W/candlewick.node ] || xz -dc .gpu/fam/candlewick.node.xz > $W/candlewick.node
export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/candlewick.node
rm -rf dist && cp -r .gpu/fam/dist dist
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
