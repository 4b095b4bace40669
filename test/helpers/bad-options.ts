// Bad options, one table for two levels of tests: test/options.test.ts checks each against the
// validation alone (no native module), test/bad-options.test.ts sends each through a loaded
// pipeline's generate() (or fromPretrained) and then generates successfully with that pipeline.
// Messages follow sharp's shape and name the option, the value received and what is allowed;
// the limits come from src/options.ts (MAX_SIDE, MAX_STEPS, MAX_IMAGES_PER_PROMPT, MAX_IMAGES_PER_CALL).

/** One bad call: its options and the exact message; `code` when not ERR_CANDLEWICK_INVALID_OPTION. */
export interface BadCase {
  title?: string;
  options: unknown;
  message: string;
}

const p = (extra: Record<string, unknown>) => ({ prompt: "a red apple", ...extra });
const latents = (shape: unknown, data: unknown) => p({ latents: { shape, data } });


/** Rejected by the TypeScript validation, before anything reaches the native module. */
export const BAD_GENERATE_OPTIONS: BadCase[] = [
  { options: p({ width: 500 }), message: "Expected integer multiple of 8 for width but received 500" },
  { options: p({ height: 500 }), message: "Expected integer multiple of 8 for height but received 500" },
  { options: p({ width: 0 }), message: "Expected integer multiple of 8 for width but received 0" },
  { options: p({ width: -64 }), message: "Expected integer multiple of 8 for width but received -64" },
  { options: p({ width: 64.5 }), message: "Expected integer multiple of 8 for width but received 64.5" },
  { options: p({ width: "512" }), message: 'Expected integer multiple of 8 for width but received "512"' },
  { options: p({ height: 16384 }), message: "Expected integer between 8 and 8192 for height but received 16384" },
  { options: p({ numInferenceSteps: 0 }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received 0" },
  { options: p({ numInferenceSteps: 1001 }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received 1001" },
  { options: p({ numInferenceSteps: 2.5 }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received 2.5" },
  { options: p({ numInferenceSteps: NaN }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received NaN" },
  { options: p({ numInferenceSteps: 30n }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received 30n" },
  { options: p({ guidanceScale: -1 }), message: "Expected finite number >= 0 for guidanceScale but received -1" },
  { options: p({ guidanceScale: Infinity }), message: "Expected finite number >= 0 for guidanceScale but received Infinity" },
  { options: p({ guidanceScale: "7.5" }), message: 'Expected finite number >= 0 for guidanceScale but received "7.5"' },
  { options: p({ guidanceScale: null }), message: "Expected finite number >= 0 for guidanceScale but received null" },
  { options: p({ numImagesPerPrompt: 0 }), message: "Expected integer between 1 and 64 for numImagesPerPrompt but received 0" },
  { options: p({ numImagesPerPrompt: 65 }), message: "Expected integer between 1 and 64 for numImagesPerPrompt but received 65" },
  // The images of one call, in all: prompts x numImagesPerPrompt.
  {
    options: { prompt: Array.from({ length: 100 }, (_, i) => `prompt ${i}`), numImagesPerPrompt: 64 },
    message: "Expected at most 64 images in one call (prompts x numImagesPerPrompt) but received 100 prompts x 64 = 6400 images; generateBatch makes any number",
  },
  {
    options: { prompt: Array.from({ length: 65 }, () => "x") },
    message: "Expected at most 64 images in one call (prompts x numImagesPerPrompt) but received 65 prompts x 1 = 65 images; generateBatch makes any number",
  },
  {
    options: { prompt: ["a", "b", "c"], numImagesPerPrompt: 22 },
    message: "Expected at most 64 images in one call (prompts x numImagesPerPrompt) but received 3 prompts x 22 = 66 images; generateBatch makes any number",
  },
  { options: p({ seed: -1 }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received -1" },
  { options: p({ seed: 1.5 }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 1.5" },
  { options: p({ seed: 2 ** 53 }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 9007199254740992" },
  { options: p({ seed: 2n ** 64n }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received 18446744073709551616n" },
  { options: p({ seed: -1n }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received -1n" },
  { options: p({ seed: "42" }), message: 'Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received "42"' },
  { options: {}, message: "Expected string or non-empty array of strings for prompt but received undefined" },
  { options: { prompt: [] }, message: "Expected string or non-empty array of strings for prompt but received an array of length 0" },
  { options: { prompt: 42 }, message: "Expected string or non-empty array of strings for prompt but received 42" },
  { options: { prompt: ["ok", 7] }, message: "Expected string for prompt[1] but received 7" },
  { options: { prompt: ["a", "b", "c"], negativePrompt: ["x", "y"] }, message: "Expected string or array of 1 or 3 strings (one per prompt) for negativePrompt but received an array of length 2" },
  { options: p({ negativePrompt: [null] }), message: "Expected string for negativePrompt[0] but received null" },
  { options: p({ negativePrompt: 3 }), message: "Expected string or array of 1 string for negativePrompt but received 3" },
  { options: p({ prompt2: 3 }), message: "Expected string or array of 1 string for prompt2 but received 3" },
  { options: { prompt: ["a", "b"], prompt2: ["x", "y", "z"] }, message: "Expected string or array of 1 or 2 strings (one per prompt) for prompt2 but received an array of length 3" },
  { options: p({ negativePrompt2: [false] }), message: "Expected string for negativePrompt2[0] but received false" },
  { options: p({ onProgress: "log" }), message: 'Expected function for onProgress but received "log"' },
  { options: p({ onWarning: {} }), message: "Expected function for onWarning but received an empty object" },
  { options: p({ signal: {} }), message: "Expected AbortSignal for signal but received an empty object" },
  { options: p({ signal: new AbortController() }), message: "Expected AbortSignal for signal but received an AbortController" },
  { options: "a red apple", message: 'Expected plain object for generate options but received "a red apple"' },
  { options: undefined, message: "Expected options object with a prompt for generate options but received undefined" },
  { options: new Map(), message: "Expected plain object for generate options but received a Map" },
  { title: "a typo in an option name is an error naming the key and the likely option", options: p({ guidence: 7 }), message: 'Unknown option "guidence" in generate options; did you mean "guidanceScale"?' },
  { options: p({ steps: 30 }), message: 'Unknown option "steps" in generate options; did you mean "numInferenceSteps"?' },
  { options: p({ frobnicate: 1 }), message: 'Unknown option "frobnicate" in generate options; known options: prompt, negativePrompt, prompt2, negativePrompt2, numInferenceSteps, guidanceScale, width, height, numImagesPerPrompt, seed, seeds, latents, scheduler, onProgress, signal, onWarning, image, maskImage, strength, paddingMaskCrop, vaeTiling, vaeSlicing, previewEvery, truncateLongPrompts, clipSkip, denoisingEnd, denoisingStart, aestheticScore, negativeAestheticScore, originalSize, cropsCoordsTopLeft, targetSize, negativeOriginalSize, negativeCropsCoordsTopLeft, negativeTargetSize' },
  { options: p({ Width: 64 }), message: 'Unknown option "Width" in generate options; did you mean "width"?' },
  // Latents: shape, batch and data length; the model-dependent shape check is the core's.
  { options: latents([1, 4, 8], new Float32Array(32)), message: "Expected array of 4 positive integers [batch, channels, height, width] for latents.shape but received an array of length 3" },
  { options: latents([1, 4, 0, 8], new Float32Array(0)), message: "Expected array of 4 positive integers [batch, channels, height, width] for latents.shape but received an array of length 4" },
  { options: latents([2, 4, 8, 8], new Float32Array(512)), message: "Expected batch of 1 (prompts x numImagesPerPrompt) for latents.shape[0] but received 2" },
  { options: latents([1, 4, 8, 8], [0, 1]), message: "Expected Float32Array for latents.data but received an array of length 2" },
  { options: latents([1, 4, 8, 8], new Float64Array(256)), message: "Expected Float32Array for latents.data but received a Float64Array" },
  { options: latents([1, 4, 8, 8], new Float32Array(255)), message: "Expected Float32Array of 256 values (shape [1, 4, 8, 8]) for latents.data but received 255 values" },
  // Non-finite latents would give an all-black image: the first one is named.
  { options: latents([1, 4, 8, 8], new Float32Array(256).fill(NaN, 3)), message: "Expected finite number for latents.data[3] but received NaN" },
  { options: latents([1, 4, 8, 8], new Float32Array(256).fill(Infinity, 255)), message: "Expected finite number for latents.data[255] but received Infinity" },
  { options: latents([1, 4, 8, 8], new Float32Array(256).fill(-Infinity, 0, 1)), message: "Expected finite number for latents.data[0] but received -Infinity" },
  { options: p({ latents: { shape: [1, 4, 8, 8], data: new Float32Array(256), dtype: "f32" } }), message: 'Unknown option "dtype" in latents; known options: shape, data' },
  // Scheduler options.
  // Sizes: zero, negative, huge, not numbers.
  { options: p({ width: 65536 }), message: "Expected integer between 8 and 8192 for width but received 65536" },
  { options: p({ height: 0 }), message: "Expected integer multiple of 8 for height but received 0" },
  { options: p({ height: -8 }), message: "Expected integer multiple of 8 for height but received -8" },
  { options: p({ height: 65536 }), message: "Expected integer between 8 and 8192 for height but received 65536" },
  { options: p({ width: 12 }), message: "Expected integer multiple of 8 for width but received 12" },
  { options: p({ width: NaN }), message: "Expected integer multiple of 8 for width but received NaN" },
  { options: p({ width: Infinity }), message: "Expected integer multiple of 8 for width but received Infinity" },
  { options: p({ height: null }), message: "Expected integer multiple of 8 for height but received null" },
  { options: p({ height: true }), message: "Expected integer multiple of 8 for height but received true" },
  { options: p({ width: [64] }), message: "Expected integer multiple of 8 for width but received an array of length 1" },
  { options: p({ width: 64n }), message: "Expected integer multiple of 8 for width but received 64n" },
  // Guidance: NaN, infinities, wrong types.
  // Model families: clipSkip's upper bound and the size conditions' model check are the core's.
  // paddingMaskCrop's type and range here; its image, mask and latents rules are the core's (test/padding-mask-crop.test.ts).
  { options: p({ paddingMaskCrop: -1 }), message: "Expected integer between 0 and 8192 for paddingMaskCrop but received -1" },
  { options: p({ paddingMaskCrop: 1.5 }), message: "Expected integer between 0 and 8192 for paddingMaskCrop but received 1.5" },
  { options: p({ clipSkip: -1 }), message: "Expected integer between 0 and 64 for clipSkip but received -1" },
  { options: p({ clipSkip: 1.5 }), message: "Expected integer between 0 and 64 for clipSkip but received 1.5" },
  { options: p({ denoisingEnd: 1 }), message: "Expected number > 0 and < 1 for denoisingEnd but received 1" },
  { options: p({ originalSize: [1024] }), message: "Expected [height, width] of integers between 1 and 131072 for originalSize but received an array of length 1" },
  { options: p({ targetSize: [0, 64] }), message: "Expected [height, width] of integers between 1 and 131072 for targetSize but received an array of length 2" },
  { options: p({ cropsCoordsTopLeft: [-1, 0] }), message: "Expected [top, left] of integers between 0 and 131072 for cropsCoordsTopLeft but received an array of length 2" },
  { options: p({ negativeOriginalSize: "512x512" }), message: 'Expected [height, width] of integers between 1 and 131072 for negativeOriginalSize but received "512x512"' },
  { options: p({ guidanceScale: NaN }), message: "Expected finite number >= 0 for guidanceScale but received NaN" },
  { options: p({ guidanceScale: -Infinity }), message: "Expected finite number >= 0 for guidanceScale but received -Infinity" },
  { options: p({ guidanceScale: [7.5] }), message: "Expected finite number >= 0 for guidanceScale but received an array of length 1" },
  { options: p({ guidanceScale: 7n }), message: "Expected finite number >= 0 for guidanceScale but received 7n" },
  { options: p({ guidanceScale: {} }), message: "Expected finite number >= 0 for guidanceScale but received an empty object" },
  // Steps: 0, 10^6, negative, wrong types.
  { options: p({ numInferenceSteps: 1_000_000 }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received 1000000" },
  { options: p({ numInferenceSteps: -1 }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received -1" },
  { options: p({ numInferenceSteps: Infinity }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received Infinity" },
  { options: p({ numInferenceSteps: "30" }), message: 'Expected integer between 1 and 1000 for numInferenceSteps but received "30"' },
  { options: p({ numInferenceSteps: null }), message: "Expected integer between 1 and 1000 for numInferenceSteps but received null" },
  { options: p({ numImagesPerPrompt: 1.5 }), message: "Expected integer between 1 and 64 for numImagesPerPrompt but received 1.5" },
  { options: p({ numImagesPerPrompt: "2" }), message: 'Expected integer between 1 and 64 for numImagesPerPrompt but received "2"' },
  { options: p({ numImagesPerPrompt: -1 }), message: "Expected integer between 1 and 64 for numImagesPerPrompt but received -1" },
  // Prompts of the wrong type.
  { options: { prompt: null }, message: "Expected string or non-empty array of strings for prompt but received null" },
  { options: { prompt: {} }, message: "Expected string or non-empty array of strings for prompt but received an empty object" },
  { options: { prompt: [[]] }, message: "Expected string for prompt[0] but received an array of length 0" },
  { options: { prompt: Symbol("x") }, message: "Expected string or non-empty array of strings for prompt but received a symbol" },
  { options: { prompt: () => "x" }, message: "Expected string or non-empty array of strings for prompt but received a function" },
  { options: { prompt: new String("x") }, message: "Expected string or non-empty array of strings for prompt but received a String" },
  { options: p({ negativePrompt: {} }), message: "Expected string or array of 1 string for negativePrompt but received an empty object" },
  { options: p({ negativePrompt: ["a", "b"] }), message: "Expected string or array of 1 string for negativePrompt but received an array of length 2" },
  { options: p({ seed: NaN }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received NaN" },
  { options: p({ seed: Infinity }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received Infinity" },
  { options: p({ seed: null }), message: "Expected safe integer >= 0 or bigint between 0 and 2^64 - 1 for seed but received null" },
  { options: p({ onProgress: 1 }), message: "Expected function for onProgress but received 1" },
  { options: p({ signal: "abort" }), message: 'Expected AbortSignal for signal but received "abort"' },
  { options: null, message: "Expected plain object for generate options but received null" },
  { options: [], message: "Expected plain object for generate options but received an array of length 0" },
  { options: 42, message: "Expected plain object for generate options but received 42" },
  // Unknown options, spelt as diffusers spells them.
  { options: p({ negative_prompt: "x" }), message: 'Unknown option "negative_prompt" in generate options; did you mean "negativePrompt"?' },
  { options: p({ num_inference_steps: 3 }), message: 'Unknown option "num_inference_steps" in generate options; did you mean "numInferenceSteps"?' },
  { options: p({ guidance_scale: 3 }), message: 'Unknown option "guidance_scale" in generate options; did you mean "guidanceScale"?' },
  { options: p({ latents: "noise" }), message: 'Expected plain object for latents but received "noise"' },
  { options: latents([1, 4, 8, 8], undefined), message: "Expected Float32Array for latents.data but received undefined" },
];

/** Load options rejected by the TypeScript validation. */
export const BAD_LOAD_OPTIONS: BadCase[] = [
  { options: { threads: 0 }, message: "Expected integer between 1 and 1024 for threads but received 0" },
  { options: { threads: 2.5 }, message: "Expected integer between 1 and 1024 for threads but received 2.5" },
  { options: { threads: "4" }, message: 'Expected integer between 1 and 1024 for threads but received "4"' },
  { options: { device: "gpu" }, message: 'Expected one of "auto", "cpu", "cuda" for device but received "gpu"' },
  { options: { dtype: "bf16" }, message: 'Expected one of "auto", "f32", "f16" for dtype but received "bf16"' },
  { options: { tf32: 1 }, message: "Expected boolean for tf32 but received 1" },
  { options: { fp8: "e4m3" }, message: 'Expected boolean for fp8 but received "e4m3"' },
  { options: { devcie: "cpu" }, message: 'Unknown option "devcie" in load options; did you mean "device"?' },
  { options: null, message: "Expected plain object for load options but received null" },
  { options: { device: "CUDA" }, message: 'Expected one of "auto", "cpu", "cuda" for device but received "CUDA"' },
  { options: { device: 0 }, message: 'Expected one of "auto", "cpu", "cuda" for device but received 0' },
  { options: { dtype: "float64" }, message: 'Expected one of "auto", "f32", "f16" for dtype but received "float64"' },
  { options: { dtype: "F16" }, message: 'Expected one of "auto", "f32", "f16" for dtype but received "F16"' },
  { options: { attention: "flash-attention" }, message: 'Expected one of "auto", "cudnn", "flash", "math" for attention but received "flash-attention"' },
  { options: { attention: true }, message: 'Expected one of "auto", "cudnn", "flash", "math" for attention but received true' },
  { options: { convolution: "nhwc" }, message: 'Expected one of "auto", "cudnn-nhwc", "cudnn-nchw", "candle" for convolution but received "nhwc"' },
  { options: { convolution: "Candle" }, message: 'Expected one of "auto", "cudnn-nhwc", "cudnn-nchw", "candle" for convolution but received "Candle"' },
  { options: { cudaGraphs: "no" }, message: 'Expected boolean for cudaGraphs but received "no"' },
  { options: { autotune: true }, message: "Expected plain object for autotune but received true" },
  { options: { autotune: { cudnn: "yes" } }, message: 'Expected boolean for autotune.cudnn but received "yes"' },
  { options: { autotune: { gemm: null } }, message: "Expected boolean for autotune.gemm but received null" },
  { options: { autotune: { cuDNN: true } }, message: 'Unknown option "cuDNN" in autotune; did you mean "cudnn"?' },
  { options: { autotune: { cublas: true } }, message: 'Unknown option "cublas" in autotune; known options: cudnn, gemm' },
  // The boolean switches the grouped options replaced: refused, naming the option to use instead.
  { options: { flashAttention: false }, message: 'Unknown option "flashAttention" in load options; did you mean "attention"? (flashAttention: false is attention: "math")' },
  { options: { cudnnAttention: false }, message: 'Unknown option "cudnnAttention" in load options; did you mean "attention"? (cudnnAttention: false is attention: "flash")' },
  { options: { cudnn: false }, message: 'Unknown option "cudnn" in load options; did you mean "convolution"? (cudnn: false is convolution: "candle")' },
  { options: { channelsLast: false }, message: 'Unknown option "channelsLast" in load options; did you mean "convolution"? (channelsLast: false is convolution: "cudnn-nchw")' },
  { options: { cudnnBenchmark: true }, message: 'Unknown option "cudnnBenchmark" in load options; did you mean "autotune"? (cudnnBenchmark: true is autotune: { cudnn: true })' },
  { options: { gemmBenchmark: true }, message: 'Unknown option "gemmBenchmark" in load options; did you mean "autotune"? (gemmBenchmark: true is autotune: { gemm: true })' },
  { options: { precision: "f16" }, message: 'Unknown option "precision" in load options; did you mean "revision"?' },
  { options: "cpu", message: 'Expected plain object for load options but received "cpu"' },
  { options: { loras: "style.safetensors" }, message: 'Expected array of { path, weight } for loras but received "style.safetensors"' },
  { options: { loras: [{ path: "" }] }, message: 'Expected non-empty string for loras[0].path but received ""' },
  { options: { loras: [{ path: "a.safetensors", weight: 100 }] }, message: "Expected number between -16 and 16 for loras[0].weight but received 100" },
  { options: { loras: [{ path: "a.safetensors", weight: Number.NaN }] }, message: "Expected number between -16 and 16 for loras[0].weight but received NaN" },
  { options: { loras: ["a.safetensors"] }, message: 'Expected plain object for loras[0] but received "a.safetensors"' },
  { options: { config: 3 }, message: "Expected non-empty string for config but received 3" },
  { options: { vae: "" }, message: 'Expected non-empty string for vae but received ""' },
];

