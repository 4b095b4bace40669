#!/usr/bin/env bash
# Issue 14's GPU check: the packed tarballs (npm run pack:all after npm run build:cuda) installed
# into a fresh folder as a user's npm install would lay them out, then a generate on the GPU through
# `import "candlewick"` and through the CLI, with no LD_PRELOAD and no LD_LIBRARY_PATH.
# The GPU machine has node (carried) but no npm: each tarball is unpacked into node_modules/<name>,
# which is what npm does with them.
#   bash bench/gpu/tarball.sh PKG_DIR OUT_DIR     (PKG_DIR: candlewick-*.tgz, candlewick-linux-x64-gnu-cuda-*.tgz, pngjs-*.tgz)
set -uo pipefail
pkgs=$(cd "$1" && pwd); out=$2
app=$(mktemp -d /tmp/app-XXXX)
mkdir -p "$app/node_modules"
for tgz in "$pkgs"/*.tgz; do
  name=$(tar xzf "$tgz" -O package/package.json | node -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).name')
  mkdir -p "$app/node_modules/$name" && tar xzf "$tgz" -C "$app/node_modules/$name" --strip-components=1
  echo "installed $name from $(basename "$tgz")"
done
cd "$app" && echo '{ "type": "module" }' > package.json
cat > generate.mjs <<'JS'
import { writeFileSync } from "node:fs";
import { StableDiffusionPipeline, nativeInfo } from "candlewick";
console.log("nativeInfo:", JSON.stringify(nativeInfo()));
const model = new URL("./node_modules/candlewick/test/fixtures/shapes-sd", import.meta.url).pathname;
const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cuda" });
console.log("device:", pipe.device, pipe.dtype, "info:", JSON.stringify(pipe.info));
for (const scheduler of ["ddim", "dpm++-2m-karras", "euler-a"]) {
  const [image] = await pipe.generate({ prompt: "a large red circle on a white background, top left", seed: 42, numInferenceSteps: 25, scheduler });
  const distinct = new Set(image.data).size;
  let red = 0;
  for (let i = 0; i < image.data.length; i += 3) if (image.data[i] > 150 && image.data[i + 1] < 100 && image.data[i + 2] < 100) red++;
  console.log(`${scheduler}: ${image.width}x${image.height}, ${distinct} distinct byte values, ${(100 * red / (image.data.length / 3)).toFixed(1)}% red pixels, settings ${JSON.stringify(image.settings)}`);
  writeFileSync(`${process.env.OUT_DIR}/tarball-${scheduler}.png`, await image.toPng());
}
await pipe.dispose();
JS
env -u LD_PRELOAD -u LD_LIBRARY_PATH OUT_DIR="$out" node generate.mjs 2>&1 | tee "$out/tarball-generate.txt"
echo "== CLI: candlewick generate --device cuda"
env -u LD_PRELOAD -u LD_LIBRARY_PATH node node_modules/candlewick/dist/cli/main.js generate "a large blue square on a yellow background, bottom right" \
  --device cuda --seed 42 --steps 25 --out "$out/tarball-cli.png" 2>&1 | tail -5 | tee -a "$out/tarball-generate.txt"
ls -la "$out"/tarball-*.png
