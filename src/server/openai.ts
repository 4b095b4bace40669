/**
 * OpenAI's image API, `POST /v1/images/generations`: `prompt`, `n`, `size`, `response_format`
 * ("b64_json": images come back inline; this server keeps no files to link to), and Candlewick's
 * own fields `negative_prompt`, `steps`, `guidance_scale`, `seed`, `scheduler`. `model`, `quality`,
 * `style` and `user` are accepted and ignored (the server has one model). Errors come in OpenAI's
 * shape, `{ error: { message, type, param, code } }`, which its clients read.
 */

import { seed as seedOf, side } from "../check-options.js";
import { MAX_STEPS } from "../options.js";
import type { SchedulerChoice } from "../schedulers.js";
import type { BatchDefaults } from "../batch/inputs.js";
import { checkOptionsObject, integerIn, invalid, numberIn, oneOf } from "../validate.js";
import type { ImageRequest } from "./request.js";

/** The most images one request may ask for (OpenAI's limit for `n`). */
export const MAX_N = 10;

const KEYS = [
  "prompt", "n", "size", "response_format", "output_format", "model", "quality", "style", "user",
  "negative_prompt", "steps", "guidance_scale", "seed", "scheduler",
] as const;

/** The request body as the library's request; throws CandlewickError (INVALID_OPTION) naming the field. */
export function parseOpenAiRequest(body: unknown): ImageRequest {
  if (body === null || typeof body !== "object") throw invalid("JSON object", "request body", body);
  const o = checkOptionsObject(body, "request body", KEYS);
  if (typeof o.prompt !== "string" || o.prompt.length === 0) throw invalid("non-empty string", "prompt", o.prompt);
  const count = o.n === undefined || o.n === null ? 1 : integerIn(o.n, "n", 1, MAX_N);
  if (o.response_format !== undefined && o.response_format !== null) oneOf(o.response_format, "response_format", ["b64_json"]);
  if (o.output_format !== undefined && o.output_format !== null) oneOf(o.output_format, "output_format", ["png"]);
  for (const key of ["model", "quality", "style", "user"] as const) {
    if (o[key] !== undefined && o[key] !== null && typeof o[key] !== "string") throw invalid("string", key, o[key]);
  }
  if (o.negative_prompt !== undefined && typeof o.negative_prompt !== "string") throw invalid("string", "negative_prompt", o.negative_prompt);
  const settings: BatchDefaults = { ...size(o.size) };
  if (o.steps !== undefined) settings.numInferenceSteps = integerIn(o.steps, "steps", 1, MAX_STEPS);
  if (o.guidance_scale !== undefined) settings.guidanceScale = numberIn(o.guidance_scale, "guidance_scale", 0);
  if (o.scheduler !== undefined) settings.scheduler = o.scheduler as SchedulerChoice;
  const seed = o.seed === undefined || o.seed === null ? undefined : seedOf(o.seed, "seed");
  return { prompt: o.prompt, negativePrompt: (o.negative_prompt as string | undefined) ?? "", count, seed, settings };
}

/** "512x768" as width and height; "auto" (or none) as the model's size. */
function size(value: unknown): { width?: number; height?: number } {
  if (value === undefined || value === null || value === "auto") return {};
  const match = typeof value === "string" ? /^(\d+)x(\d+)$/.exec(value) : null;
  if (!match) throw invalid('"WIDTHxHEIGHT" (e.g. "512x512") or "auto"', "size", value);
  return { width: side(Number(match[1]), "size (width)"), height: side(Number(match[2]), "size (height)") };
}

/** An error in OpenAI's shape. */
export function openAiError(message: string, status: number, param?: string): { error: { message: string; type: string; param: string | null; code: string | null } } {
  const type = status === 401 ? "authentication_error" : status === 429 || status === 503 ? "server_busy" : status >= 500 ? "server_error" : "invalid_request_error";
  return { error: { message, type, param: param ?? null, code: null } };
}
