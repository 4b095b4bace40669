/**
 * AUTOMATIC1111's web UI API (`/sdapi/v1/...`), the routes its clients (Krita's and Photoshop's
 * plugins, ComfyUI nodes, scripts) call: txt2img's request and answer (img2img's own fields are in
 * ./a1111-img2img.ts), progress, interrupt.
 * Request fields that web UI has but Candlewick does not implement are accepted while they hold
 * their neutral value (so clients that send every field work) and refused when they ask for
 * something (`enable_hr: true`, `restore_faces: true`, ...).
 */

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { GeneratedImage } from "../image.js";
import { seed as seedOf, side } from "../check-options.js";
import { MAX_IMAGES_PER_CALL, MAX_STEPS } from "../options.js";
import type { BatchDefaults } from "../batch/inputs.js";
import { checkOptionsObject, integerIn, invalid, numberIn } from "../validate.js";
import type { BatcherState } from "./batcher.js";
import type { ImageRequest } from "./request.js";

/** The web UI's sampler names and Candlewick's scheduler for each (plus its "Karras" variant where there is one). */
const SAMPLERS: Record<string, [string, string | undefined]> = {
  "Euler a": ["euler-a", undefined],
  Euler: ["euler", "euler-karras"],
  Heun: ["heun", "heun-karras"],
  DDIM: ["ddim", undefined],
  PLMS: ["plms", undefined],
  DDPM: ["ddpm", undefined],
  LCM: ["lcm", undefined],
  UniPC: ["unipc", "unipc-karras"],
  "DPM++ 2M": ["dpm++-2m", "dpm++-2m-karras"],
  "DPM++ 2M Karras": ["dpm++-2m-karras", "dpm++-2m-karras"],
  "DPM++ 2M SDE": ["dpm++-2m-sde", "dpm++-2m-sde-karras"],
  "DPM++ 2M SDE Karras": ["dpm++-2m-sde-karras", "dpm++-2m-sde-karras"],
};
export const SAMPLER_NAMES = Object.keys(SAMPLERS);

const USED = [
  "prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width", "height", "batch_size", "n_iter",
  "sampler_name", "sampler_index", "scheduler", "eta",
] as const;
/** Fields that are fine at these values (what the web UI's clients send by default). */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  enable_hr: (v) => v === false,
  restore_faces: (v) => v === false || v === null,
  tiling: (v) => v === false || v === null,
  subseed: (v) => v === -1 || v === 0,
  subseed_strength: (v) => v === 0,
  seed_resize_from_h: (v) => v === -1 || v === 0,
  seed_resize_from_w: (v) => v === -1 || v === 0,
  denoising_strength: () => true,
  styles: (v) => Array.isArray(v) && v.length === 0,
  override_settings: (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0,
  override_settings_restore_afterwards: () => true,
  send_images: (v) => v === true,
  save_images: (v) => v === false,
  do_not_save_samples: () => true,
  do_not_save_grid: () => true,
  script_args: (v) => Array.isArray(v) && v.length === 0,
  script_name: (v) => v === null || v === "",
  alwayson_scripts: (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0,
  s_churn: (v) => v === 0,
  s_tmin: (v) => v === 0,
  s_tmax: () => true,
  s_noise: (v) => v === 1,
  disable_extra_networks: () => true,
  comments: () => true,
  firstphase_width: (v) => v === 0,
  firstphase_height: (v) => v === 0,
  infotext: () => true,
  force_task_id: () => true,
};

/** A txt2img body as the library's request; throws CandlewickError (INVALID_OPTION) naming the field. */
export function parseTxt2imgRequest(body: unknown): ImageRequest {
  return parseCommon(checkBody(body, [], NEUTRAL));
}

/**
 * The body as an object whose fields are all `USED`, `used` or in `neutral` (a field of `neutral`
 * at a value its test refuses throws); the neutral tables of both routes apply.
 */
export function checkBody(body: unknown, used: readonly string[], neutral: Record<string, (v: unknown) => boolean>): Record<string, unknown> {
  if (body === null || typeof body !== "object") throw invalid("JSON object", "request body", body);
  const tables = { ...NEUTRAL, ...neutral };
  const o = checkOptionsObject(body, "request body", [...USED, ...used, ...Object.keys(tables)]);
  for (const [key, isNeutral] of Object.entries(tables)) {
    if (o[key] !== undefined && !isNeutral(o[key])) throw notSupported(key, o[key]);
  }
  return o;
}

/** The refusal of a field the server does not implement at this value. */
export function notSupported(key: string, value: unknown, hint = "leave it out or at its default"): CandlewickError {
  return new CandlewickError(`${key} ${JSON.stringify(value)} is not supported by Candlewick's server (${hint})`, INVALID_OPTION);
}

/** The fields txt2img and img2img share (`USED`), as the library's request. */
export function parseCommon(o: Record<string, unknown>): ImageRequest {
  if (typeof o.prompt !== "string") throw invalid("string", "prompt", o.prompt);
  if (o.negative_prompt !== undefined && typeof o.negative_prompt !== "string") throw invalid("string", "negative_prompt", o.negative_prompt);
  const batchSize = o.batch_size === undefined ? 1 : integerIn(o.batch_size, "batch_size", 1, MAX_IMAGES_PER_CALL);
  const iterations = o.n_iter === undefined ? 1 : integerIn(o.n_iter, "n_iter", 1, MAX_IMAGES_PER_CALL);
  if (batchSize * iterations > MAX_IMAGES_PER_CALL) {
    throw new CandlewickError(`Expected at most ${MAX_IMAGES_PER_CALL} images (batch_size x n_iter) but received ${batchSize} x ${iterations}`, INVALID_OPTION);
  }
  const settings: BatchDefaults = {};
  if (o.steps !== undefined) settings.numInferenceSteps = integerIn(o.steps, "steps", 1, MAX_STEPS);
  if (o.cfg_scale !== undefined) settings.guidanceScale = numberIn(o.cfg_scale, "cfg_scale", 0);
  if (o.width !== undefined) settings.width = side(o.width, "width");
  if (o.height !== undefined) settings.height = side(o.height, "height");
  const scheduler = schedulerOf(o.sampler_name ?? o.sampler_index, o.scheduler);
  if (o.eta !== undefined && o.eta !== null) {
    const eta = numberIn(o.eta, "eta", 0, 1);
    settings.scheduler = { type: (scheduler ?? "ddim") as "ddim", eta };
  } else if (scheduler !== undefined) {
    settings.scheduler = scheduler as BatchDefaults["scheduler"];
  }
  const seed = o.seed === undefined || o.seed === -1 ? undefined : seedOf(o.seed, "seed");
  return { prompt: o.prompt, negativePrompt: (o.negative_prompt as string | undefined) ?? "", count: batchSize * iterations, seed, settings };
}

/** The scheduler for a web UI sampler (or a Candlewick scheduler name) and its "scheduler" ("Karras", "Automatic"). */
function schedulerOf(sampler: unknown, schedule: unknown): string | undefined {
  if (schedule !== undefined && schedule !== null && !["Automatic", "automatic", "Karras", "karras"].includes(schedule as string)) {
    throw invalid('"Automatic" or "Karras"', "scheduler", schedule);
  }
  if (sampler === undefined || sampler === null || sampler === "") return undefined;
  if (typeof sampler !== "string") throw invalid("string", "sampler_name", sampler);
  const known = SAMPLERS[sampler];
  const karras = /^karras$/i.test(String(schedule ?? ""));
  if (known) {
    if (karras && !known[1]) throw new CandlewickError(`sampler_name "${sampler}" has no Karras variant`, INVALID_OPTION);
    return karras ? known[1] : known[0];
  }
  // Anything else is taken as a Candlewick scheduler name ("dpm++-2m-karras", "EulerDiscreteScheduler"): the core checks it.
  return sampler;
}

/**
 * txt2img's and img2img's answer: base64 PNGs, the request's parameters, and `info` (a JSON
 * string, as the web UI sends it; `extra` adds img2img's fields to it).
 */
export function imagesResponse(
  body: Record<string, unknown>, r: ImageRequest, images: { png: string; seed: bigint; infotext: string }[], extra: Record<string, unknown> = {},
): unknown {
  const first = images[0];
  const info = {
    prompt: r.prompt,
    all_prompts: images.map(() => r.prompt),
    negative_prompt: r.negativePrompt,
    all_negative_prompts: images.map(() => r.negativePrompt),
    seed: first ? Number(first.seed) : -1,
    all_seeds: images.map((i) => Number(i.seed)),
    all_seeds_exact: images.map((i) => i.seed.toString()),
    steps: body.steps ?? null,
    cfg_scale: body.cfg_scale ?? null,
    width: body.width ?? null,
    height: body.height ?? null,
    sampler_name: body.sampler_name ?? null,
    batch_size: body.batch_size ?? 1,
    infotexts: images.map((i) => i.infotext),
    ...extra,
  };
  return { images: images.map((i) => i.png), parameters: body, info: JSON.stringify(info) };
}

/**
 * GET /sdapi/v1/progress: the running batch's share done, an estimate of the seconds left, the
 * queue, and (as `current_image`, a base64 PNG, unless `skipCurrentImage`) the latest preview of
 * the latents of the batch's first image.
 */
export function progressResponse(state: BatcherState, skipCurrentImage = false): unknown {
  const run = state.running[0];
  const progress = run && run.totalSteps > 0 ? run.step / run.totalSteps : 0;
  const elapsed = run ? (Date.now() - run.startedAt) / 1000 : 0;
  const eta = run && progress > 0 ? (elapsed / progress) * (1 - progress) : run ? state.secondsPerBatch : 0;
  return {
    progress,
    eta_relative: eta,
    state: {
      skipped: false,
      interrupted: false,
      job: run ? "txt2img" : "",
      job_count: state.running.length + state.queuedRequests,
      job_timestamp: run ? new Date(run.startedAt).toISOString() : "0",
      job_no: 0,
      sampling_step: run?.step ?? 0,
      sampling_steps: run?.totalSteps ?? 0,
    },
    current_image: run?.preview && !skipCurrentImage ? previewPng(run.preview) : null,
    textinfo: null,
  };
}

function previewPng(preview: { width: number; height: number; data: Uint8Array }): string {
  return Buffer.from(new GeneratedImage(preview.width, preview.height, preview.data, 0n).toPng()).toString("base64");
}
