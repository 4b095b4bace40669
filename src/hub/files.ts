/**
 * Which files of a diffusers Stable Diffusion repository the pipeline reads: the configs, the
 * tokenizer and one safetensors file per model (the `fp16` variant when asked for and present) or,
 * for a model that `save_pretrained` sharded, its index json and the shards the index's weight_map
 * names (diffusers' `_fetch_index_file` / `_get_checkpoint_shard_files`); for SDXL (a repository with `text_encoder_2/config.json`), the second tokenizer and text encoder too.
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
  /** Sharded models' index files: fetch them, then the shards they name (`shardsOfIndex`). */
  indexes: string[];
}

export function selectPipelineFiles(available: readonly string[], variant: Variant | undefined): FileSelection {
  const present = new Set(available);
  const files: string[] = [];
  const missing: string[] = [];
  const indexes: string[] = [];
  const sdxl = present.has(SECOND_ENCODER.marker);
  const required = sdxl ? [...REQUIRED, ...SECOND_ENCODER.required] : REQUIRED;
  const weights = sdxl ? [...WEIGHTS, SECOND_ENCODER.weights] : WEIGHTS;
  for (const file of required) (present.has(file) ? files : missing).push(file);
  for (const file of [...OPTIONAL, ...(sdxl ? SECOND_ENCODER.optional : [])]) if (present.has(file)) files.push(file);
  for (const [folder, stem] of weights) {
    const [plain, half, plainIndex, halfIndex] = weightNames(folder, stem);
    // The variant when asked for and present, else the plain weights, else whichever exists (the
    // core upcasts fp16 on load); a single file before an index (the core's find_weights order).
    const order = variant === "fp16" ? [half, halfIndex, plain, plainIndex] : [plain, plainIndex, half, halfIndex];
    const choice = order.find((f) => present.has(f));
    if (choice) (choice.endsWith(".json") ? indexes : files).push(choice);
    else missing.push(`${folder} weights (${plain} or ${half}, or a sharded index ${plainIndex}; candlewick reads safetensors only)`);
  }
  return { files, missing, indexes };
}

/** A model's weights names: single files `<stem>[.fp16].safetensors`, indexes `<stem>.safetensors.index[.fp16].json` (diffusers' `_add_variant`). */
function weightNames(folder: string, stem: string): [string, string, string, string] {
  return [
    `${folder}/${stem}.safetensors`,
    `${folder}/${stem}.fp16.safetensors`,
    `${folder}/${stem}.safetensors.index.json`,
    `${folder}/${stem}.safetensors.index.fp16.json`,
  ];
}

/**
 * The shard files that the index `indexFile` (its text `json`) names, as repository paths beside
 * it. Throws an Error naming the index when it is not one, or names a shard outside its folder.
 */
export function shardsOfIndex(indexFile: string, json: string): string[] {
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(json) as { weight_map?: unknown }).weight_map;
  } catch (error) {
    throw new Error(`${indexFile} is not JSON: ${(error as Error).message}`);
  }
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new Error(`${indexFile} has no "weight_map" object (tensor name to shard file)`);
  }
  const folder = indexFile.slice(0, indexFile.lastIndexOf("/") + 1);
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard === "" || /[\\/]/.test(shard) || shard === "." || shard === "..") {
      throw new Error(`${indexFile}'s weight_map puts tensor ${tensor} in ${JSON.stringify(shard)}, which is not a file name beside the index`);
    }
    shards.add(folder + shard);
  }
  if (shards.size === 0) throw new Error(`${indexFile} has an empty weight_map`);
  return [...shards].sort();
}

/** The files of a pipeline that a snapshot folder should hold, as paths relative to it. */
export const PIPELINE_FOLDERS = [
  "scheduler", "tokenizer", "tokenizer_2", ...WEIGHTS.map(([folder]) => folder), SECOND_ENCODER.weights[0],
];
