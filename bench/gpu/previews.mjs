// The cost of progress previews (issue 17): the same generate with onProgress alone and with
// previewEvery: 1, alternated, and the difference per preview.
//   [DIST_URL=file://.../dist/index.js] [LOAD='{"device": "cuda"}'] node bench/gpu/previews.mjs MODEL_DIR \
//       [SIZE=512] [STEPS=25] [RUNS=3]
// Prints one JSON line: median ms of each, ms per preview, and the previews' size.
const { StableDiffusionPipeline } = await import(process.env.DIST_URL ?? new URL("../../dist/index.js", import.meta.url).href);
const [dir, sizeArg, stepsArg, runsArg] = process.argv.slice(2);
if (!dir) throw new Error("usage: node bench/gpu/previews.mjs MODEL_DIR [SIZE] [STEPS] [RUNS]");
const size = Number(sizeArg ?? 512);
const steps = Number(stepsArg ?? 25);
const runs = Number(runsArg ?? 3);
const load = JSON.parse(process.env.LOAD ?? '{"device": "cuda"}');
const pipe = await StableDiffusionPipeline.fromPretrained(dir, load);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function once(previewEvery) {
  let previews = 0;
  let previewSize = null;
  const started = performance.now();
  await pipe.generate({
    prompt: "a photo of an astronaut riding a horse on mars", numInferenceSteps: steps, seed: 1, width: size, height: size,
    ...(previewEvery ? { previewEvery } : {}),
    onProgress: (p) => {
      if (p.preview) {
        previews += p.preview.length;
        previewSize = [p.preview[0].width, p.preview[0].height];
      }
    },
  });
  return { ms: performance.now() - started, previews, previewSize };
}

await once(undefined); // warm-up: kernels, plans, graphs
await once(1);
const plain = [], withPreviews = [];
let last;
for (let i = 0; i < runs; i++) {
  plain.push((await once(undefined)).ms);
  last = await once(1);
  withPreviews.push(last.ms);
}
if (last.previews !== steps) throw new Error(`expected ${steps} previews with previewEvery: 1, got ${last.previews}`);
const [msPlain, msPreviews] = [median(plain), median(withPreviews)];
console.log(JSON.stringify({
  bench: "previews", info: pipe.info, width: size, height: size, steps, runs,
  ms_plain_median: msPlain, ms_previews_median: msPreviews, ms_plain: plain, ms_previews: withPreviews,
  previews: last.previews, preview_size: last.previewSize,
  ms_per_preview: (msPreviews - msPlain) / last.previews,
}));
await pipe.dispose();
