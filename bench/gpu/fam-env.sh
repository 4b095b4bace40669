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
if [ -f .gpu/fam/candlewick.node.xz ]; then  # a carried build (round10.sh's final part installs tarballs instead)
  [ -f $W/candlewick.node ] || xz -dc .gpu/fam/candlewick.node.xz > $W/candlewick.node
  export CANDLEWICK_NATIVE_LIBRARY_PATH=$W/candlewick.node
  rm -rf dist && cp -r .gpu/fam/dist dist
fi
started=$SECONDS
stage() { echo; echo "== [$((SECONDS - started))s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# startup_row LABEL [VAR=value ...]: one fresh node process to its first SD1.5-shaped image (startup.mjs on
# /tmp/sd15, the library's start-up profile on), with VARs in its environment; its rows go to
# $R/startup-LABEL.jsonl and, labelled, to $OUT/startup-all.jsonl, a summary to the log.
startup_row() {
  local label=$1; shift
  env "$@" CANDLEWICK_PROFILE_STARTUP=1 timeout 90 node bench/gpu/startup.mjs /tmp/sd15 1 \
    > "$R/startup-$label.jsonl" 2> "$R/startup-$label.err"
  echo "rc=$?"; grep -v candlewick_startup "$R/startup-$label.err" | tail -3
  grep -h candlewick_startup "$R/startup-$label.err" >> "$R/startup-$label.jsonl"
  python3 bench/gpu/startup_summary.py "$R/startup-$label.jsonl"
  sed "s/^{/{\"process\": \"$label\", /" "$R/startup-$label.jsonl" >> "$OUT/startup-all.jsonl"
}
# model_folder DIR [FAMILY]: a random-weight model of FAMILY's shapes (sd15 unless given; reference.py with
# MODEL_ONLY=1) written at DIR once a machine, then read through once so the page cache holds it.
model_folder() {
  local dir=$1 family=${2:-sd15}
  [ -f "$dir/unet/config.json" ] || { stage "$family-shaped model at $dir"; FAMILY=$family MODEL_ONLY=1 timeout 300 python3 bench/gpu/reference.py "$dir" 2>&1 | grep -v -i -E 'warn|deprecat' | tail -1; }
  cat "$dir"/*/*.safetensors > /dev/null
}
# sdxl_compiled_rows BATCHES MIN_LEFT: diffusers' torch.compile reduce-overhead on /tmp/sdxl (anchor_families.py, e.g.
# BATCHES=compiled:b4) into $OUT/sdxl-compiled-<last batch>.jsonl, when at least MIN_LEFT s of CALL_S (580) are left.
sdxl_compiled_rows() {
  local which=$1 left=$(( ${CALL_S:-580} - SECONDS )) file="$OUT/sdxl-compiled-${1##*:}.jsonl"
  [ $left -gt "$2" ] || { echo "no time left for diffusers' $which (${left}s)"; return; }
  stage "diffusers torch.compile reduce-overhead, $which (${left}s left)"
  timeout $(( left - 5 )) python3 bench/gpu/anchor_families.py /tmp/sdxl "$file" "$which" 2>&1 | grep -v -i -E 'warn|deprecat|float32' | tail -3
  cat "$file"
}
# use_tarballs PKG_DIR: the tarballs in PKG_DIR installed as npm would (tarball.sh: `import "candlewick"` and the CLI
# generate on the GPU with no LD_ variables; its log, CLI image and package.json under $OUT); later commands then load
# that install's .node and dist/.
use_tarballs() {
  mkdir -p /tmp/tarball-out && env -u CANDLEWICK_NATIVE_LIBRARY_PATH bash bench/gpu/tarball.sh "$1" /tmp/tarball-out 2>&1 | tail -12
  cp /tmp/tarball-out/tarball-generate.txt /tmp/tarball-out/tarball-cli.png "$OUT/"
  local app; app=$(ls -td /tmp/app-* | head -1)/node_modules
  export CANDLEWICK_NATIVE_LIBRARY_PATH=$(ls $app/candlewick-linux-x64-gnu-cuda/*.node)
  rm -rf dist && cp -r $app/candlewick/dist dist
  # dist/ imports pngjs, which node_modules/ beside it lacks on the GPU machine (session 22's first final call failed
  # so): the installed one is linked there.
  mkdir -p node_modules && rm -rf node_modules/pngjs && ln -s $app/pngjs node_modules/pngjs
  cp $app/candlewick/package.json "$OUT/package.json"
}
# fp8_gpu_tests [SECONDS]: test/gpu's FP8 tests on /tmp/sd15 (a LoRA one too when CANDLEWICK_GPU_LORA is set), the log
# in $OUT/check-test.txt, the figures to the call's log.
fp8_gpu_tests() {
  stage "GPU tests: FP8"
  CANDLEWICK_GPU_MODEL=/tmp/sd15 timeout "${1:-150}" node --test --test-name-pattern "FP8" \
    test/gpu/gpu.test.mjs 2>&1 | tee "$OUT/check-test.txt" | grep -E "^# (pass|fail|skip)|^not ok|rror|_db|_mib" | head -20
}
