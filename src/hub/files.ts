/**
 * Which files of a diffusers Stable Diffusion repository the pipeline reads: the configs, the
 * tokenizer and one safetensors file per model (the `fp16` variant when asked for and present);
 * for SDXL (a repository with `text_encoder_2/config.json`), the second tokenizer and text encoder too.
 * Nothing else is downloaded (no .bin/.ckpt copies, no safety checker, no README images).
 */

/** Needed in every repository. */
const REQUIRED = [
  "model_index.json",
  "scheduler/scheduler_config.json",
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "text_encoder/config.json",
  "unet/config.json",
  "vae/config.json",
];

/** Read when present. */
const OPTIONAL = ["tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"];

/** Each model's folder and the stem of its weights file. */
const WEIGHTS: readonly [string, string][] = [
  ["text_encoder", "model"],
  ["unet", "diffusion_pytorch_model"],
  ["vae", "diffusion_pytorch_model"],
];

/** SDXL's second tokenizer and text encoder: needed when `text_encoder_2/config.json` is there. */
const SECOND_ENCODER = {
  marker: "text_encoder_2/config.json",
  required: ["tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "text_encoder_2/config.json"],
  optional: ["tokenizer_2/tokenizer_config.json", "tokenizer_2/special_tokens_map.json"],
  weights: ["text_encoder_2", "model"] as [string, string],
};

export type Variant = "fp16";
export const VARIANTS: readonly Variant[] = ["fp16"];

/** The files to fetch from `available` (a revision's file list), and what is missing. */
export interface FileSelection {
  files: string[];
  /** Descriptions of needed files that `available` lacks ("unet/config.json"). */
  missing: string[];
}

export function selectPipelineFiles(available: readonly string[], variant: Variant | undefined): FileSelection {
  const present = new Set(available);
  const files: string[] = [];
  const missing: string[] = [];
  const sdxl = present.has(SECOND_ENCODER.marker);
  const required = sdxl ? [...REQUIRED, ...SECOND_ENCODER.required] : REQUIRED;
  const weights = sdxl ? [...WEIGHTS, SECOND_ENCODER.weights] : WEIGHTS;
  for (const file of required) (present.has(file) ? files : missing).push(file);
  for (const file of [...OPTIONAL, ...(sdxl ? SECOND_ENCODER.optional : [])]) if (present.has(file)) files.push(file);
  for (const [folder, stem] of weights) {
    const plain = `${folder}/${stem}.safetensors`;
    const half = `${folder}/${stem}.fp16.safetensors`;
    // The variant when asked for and present, else the plain file, else whichever exists (the core upcasts fp16 on load).
    const choice = [variant === "fp16" ? half : plain, plain, half].find((f) => present.has(f));
    if (choice) files.push(choice);
    else missing.push(`${folder} weights (${plain} or ${half}; candlewick reads safetensors only)`);
  }
  return { files, missing };
}

/** The files of a pipeline that a snapshot folder should hold, as paths relative to it. */
export const PIPELINE_FOLDERS = [
  "scheduler", "tokenizer", "tokenizer_2", ...WEIGHTS.map(([folder]) => folder), SECOND_ENCODER.weights[0],
];
