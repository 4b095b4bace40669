// One small generate on the GPU, for locating a failure (bench/gpu/seams.sh PART=S):
//   DIST_URL=file://.../dist/index.js LOAD='{"cudaGraphs": false}' node bench/gpu/one.mjs MODEL_DIR [SIZE]
// with CANDLEWICK_CUDA_SYNC_CHECK=1 or under compute-sanitizer.
const { StableDiffusionPipeline } = await import(process.env.DIST_URL ?? new URL("../../dist/index.js", import.meta.url).href);
const load = JSON.parse(process.env.LOAD ?? "{}");
const size = Number(process.argv[3] ?? 256);
const pipe = await StableDiffusionPipeline.fromPretrained(process.argv[2], { device: "cuda", ...load });
console.log("loaded", JSON.stringify(pipe.info));
const [image] = await pipe.generate({ prompt: "a red circle", numInferenceSteps: 2, seed: 1, width: size, height: size });
console.log("generated", image.width, image.height, new Set(image.data).size, "distinct values");
await pipe.dispose();
