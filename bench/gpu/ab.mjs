// A same-call A/B of two builds of candlewick on the GPU test machine: each build's package
// (its dist/ and its CUDA .node) in fresh node processes, alternating A, B, A, B, ... so that both
// see the same machine; SD1.5-shaped model of bench/gpu/reference.py, 512x512, 50 DDIM steps,
// guidance 7.5, default load options (every GPU switch on), batch 1 and 8.
//
//   node bench/gpu/ab.mjs MODEL_DIR OUT.json A_NAME A_DIST A_NODE B_NAME B_DIST B_NODE
// Each process: load, one warm-up, RUNS timed calls; a build's figure is the median over all its
// rounds' runs, and the spread (min, max) is printed beside it.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modelDir, outPath, ...builds] = process.argv.slice(2);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const RUNS = Number(process.env.RUNS ?? 3);
const BATCHES = (process.env.BATCHES ?? "1,8").split(",").map(Number);
const sides = [];
for (let i = 0; i < builds.length; i += 3) sides.push({ name: builds[i], dist: builds[i + 1], node: builds[i + 2] });

const child = `
  const { StableDiffusionPipeline } = await import(process.env.AB_DIST);
  const pipe = await StableDiffusionPipeline.fromPretrained(process.env.AB_MODEL, { device: "cuda" });
  const batch = Number(process.env.AB_BATCH);
  const call = { prompt: "a photo of an astronaut riding a horse on mars", numInferenceSteps: 50, guidanceScale: 7.5,
    width: 512, height: 512, numImagesPerPrompt: batch, seed: 1, scheduler: "ddim" };
  await pipe.generate(call);
  const times = [];
  for (let i = 0; i < Number(process.env.AB_RUNS); i++) {
    const t0 = performance.now(); await pipe.generate(call); times.push((performance.now() - t0) / 1e3);
  }
  console.log(JSON.stringify({ times, info: pipe.info }));
  await pipe.dispose();`;

const results = [];
for (const batch of BATCHES) {
  const times = Object.fromEntries(sides.map((s) => [s.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of round % 2 === 0 ? sides : [...sides].reverse()) {
      const env = {
        ...process.env, CANDLEWICK_NATIVE_LIBRARY_PATH: side.node, AB_DIST: pathToFileURL(`${side.dist}/index.js`).href,
        AB_MODEL: modelDir, AB_BATCH: String(batch), AB_RUNS: String(RUNS),
      };
      const out = execFileSync(process.execPath, ["--input-type=module", "-e", child], { env, encoding: "utf8" });
      const { times: t } = JSON.parse(out.trim().split("\n").pop());
      times[side.name].push(...t);
      console.log(`batch ${batch} round ${round} ${side.name}: ${t.map((x) => x.toFixed(4)).join(" ")}`);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const s of sides) {
    const t = times[s.name];
    results.push({ build: s.name, batch, median_s: median(t), min_s: Math.min(...t), max_s: Math.max(...t), images_per_s: batch / median(t), n: t.length });
  }
  const [a, b] = sides.map((s) => median(times[s.name]));
  console.log(`batch ${batch}: ${sides[0].name} ${a.toFixed(4)} s, ${sides[1].name} ${b.toFixed(4)} s, ${sides[1].name}/${sides[0].name} = ${(b / a).toFixed(3)}`);
}
writeFileSync(outPath, JSON.stringify({ results }, null, 1));
