/**
 * Which files of a diffusers Stable Diffusion repository the pipeline reads: the configs, the
 * tokenizer and one safetensors file per model (the `fp16` variant when asked for and present).
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
  for (const file of REQUIRED) (present.has(file) ? files : missing).push(file);
  for (const file of OPTIONAL) if (present.has(file)) files.push(file);
  for (const [folder, stem] of WEIGHTS) {
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
export const PIPELINE_FOLDERS = ["scheduler", "tokenizer", ...WEIGHTS.map(([folder]) => folder)];
