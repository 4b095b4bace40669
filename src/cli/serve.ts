/**
 * `candlewick serve`: load the model once and answer OpenAI's image API, AUTOMATIC1111's txt2img
 * and img2img API and a page to try it at `/`, until SIGINT or SIGTERM.
 */

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { device as checkDevice } from "../check-options.js";
import { MAX_STEPS, type Device } from "../options.js";
import { PipelinePool } from "../pool.js";
import { createServer, DEFAULTS } from "../server/create-server.js";
import { integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, loadOptionsFrom, parseFlags } from "./flags.js";
import { reportError } from "./generate.js";
import { DEFAULT_MODEL, loadModel } from "./model.js";
import { onSecondSignal, untilSignal } from "./signals.js";
import { UsageError } from "./usage.js";

export const SERVE_HELP = `Usage: candlewick serve [options]

Load a model once and serve it over HTTP until interrupted:
  POST /v1/images/generations   OpenAI's image API (prompt, n, size, response_format "b64_json";
                                also negative_prompt, steps, guidance_scale, seed, scheduler)
  POST /sdapi/v1/txt2img        AUTOMATIC1111's API, with GET /sdapi/v1/progress and POST /sdapi/v1/interrupt
  POST /sdapi/v1/img2img        AUTOMATIC1111's image to image and inpainting (init_images, mask, denoising_strength)
  GET  /health                  Status (never needs the token)
  GET  /                        A page to try it: a form, live progress with a preview, a gallery
                                of the images made since the server started (GET /gallery)
Concurrent requests with the same size, steps, guidance and scheduler share one GPU batch.

Options:
${COMMON_HELP.model}
  --port <n>                Port (default: ${DEFAULTS.port}; 0 picks a free one)
  --host <addr>             Address to bind (default: ${DEFAULTS.host}, this machine only; 0.0.0.0 for all)
  --token <t>               Require "Authorization: Bearer <t>" (default: $CANDLEWICK_TOKEN, else none)
  --devices <list>          A pool: one pipeline per device, comma-separated (cuda:0,cuda:1) or "all"
  --batch-size <n>          The most images in one GPU batch, 1-64 (default: ${DEFAULTS.maxBatchSize})
  --batch-window <ms>       How long a request waits for others to share its batch (default: ${DEFAULTS.batchWindowMs})
  --max-queue <n>           Images waiting before requests get 503 (default: ${DEFAULTS.maxQueue})
  --max-body <bytes>        Largest request body; larger get 413 (default: ${DEFAULTS.maxBodyBytes})
  --max-image-body <bytes>  Largest img2img body (its images in base64) (default: ${DEFAULTS.maxImageBodyBytes})
  --preview-every <n>       Steps between previews of the latents in the progress (default: ${DEFAULTS.previewEvery})
  --gallery <n>             The newest images kept for the page's gallery, 0 for none (default: ${DEFAULTS.galleryImages})
${COMMON_HELP.device}

Example:
  candlewick serve --model ./stable-diffusion-v1-5 --port 7860
  curl -s localhost:7860/v1/images/generations -H 'content-type: application/json' \\
    -d '{"prompt": "a lighthouse at dusk", "size": "512x512"}' | jq -r '.data[0].b64_json' | base64 -d > out.png
`;

const OPTIONS = {
  model: COMMON_FLAGS.model,
  config: COMMON_FLAGS.config,
  vae: COMMON_FLAGS.vae,
  lora: COMMON_FLAGS.lora,
  revision: COMMON_FLAGS.revision,
  variant: COMMON_FLAGS.variant,
  device: COMMON_FLAGS.device,
  dtype: COMMON_FLAGS.dtype,
  threads: COMMON_FLAGS.threads,
  fp8: COMMON_FLAGS.fp8,
  quiet: COMMON_FLAGS.quiet,
  help: COMMON_FLAGS.help,
  port: { type: "string" },
  host: { type: "string" },
  token: { type: "string" },
  devices: { type: "string" },
  "batch-size": { type: "string" },
  "batch-window": { type: "string" },
  "max-queue": { type: "string" },
  "max-body": { type: "string" },
  "max-image-body": { type: "string" },
  "preview-every": { type: "string" },
  gallery: { type: "string" },
} as const;

/** Run the command; resolves with the exit code once the server has stopped. */
export async function serve(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "serve");
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, "serve");
  const flags = checkFlags(values);
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);
  try {
    const model = values.model ?? DEFAULT_MODEL;
    let pipeline;
    if (flags.devices) {
      say(`Loading ${model} on ${flags.devices === "all" ? "every CUDA GPU" : flags.devices.join(", ")}`);
      pipeline = await PipelinePool.fromPretrained(model, { ...flags.load, devices: flags.devices });
      say(`Running on ${pipeline.devices.join(", ")}`);
    } else {
      pipeline = await loadModel(values.model, flags.load, quiet, say);
    }
    const token = values.token ?? process.env.CANDLEWICK_TOKEN ?? undefined;
    const server = await createServer({ model: pipeline, modelName: values.model ?? "shapes-sd", ...flags.limits, ...(token ? { token } : {}) });
    const url = await server.listen({ port: flags.port, host: values.host ?? DEFAULTS.host });
    process.stdout.write(`Listening on ${url}${token ? " (bearer token required)" : ""}\n`);
    await untilSignal();
    say("Stopping (signal again to stop at once)");
    onSecondSignal(() => say("Stopping at once"));
    await server.close();
    await pipeline.dispose();
    return 0;
  } catch (error) {
    return reportError(error, "");
  }
}

function checkFlags(values: ReturnType<typeof parseFlags<typeof OPTIONS>>["values"]) {
  try {
    const limits: Record<string, number> = {};
    if (values["batch-size"] !== undefined) limits.maxBatchSize = integerIn(integer(values["batch-size"]), "--batch-size", 1, 64);
    if (values["batch-window"] !== undefined) limits.batchWindowMs = integerIn(integer(values["batch-window"]), "--batch-window", 0, 60_000);
    if (values["max-queue"] !== undefined) limits.maxQueue = integerIn(integer(values["max-queue"]), "--max-queue", 1, 1_000_000);
    if (values["max-body"] !== undefined) limits.maxBodyBytes = integerIn(integer(values["max-body"]), "--max-body", 1024, 1 << 30);
    if (values["max-image-body"] !== undefined) limits.maxImageBodyBytes = integerIn(integer(values["max-image-body"]), "--max-image-body", 1024, 1 << 30);
    if (values["preview-every"] !== undefined) limits.previewEvery = integerIn(integer(values["preview-every"]), "--preview-every", 1, MAX_STEPS);
    if (values.gallery !== undefined) limits.galleryImages = integerIn(integer(values.gallery), "--gallery", 0, 10_000);
    const port = values.port === undefined ? DEFAULTS.port : integerIn(integer(values.port), "--port", 0, 65535);
    let devices: Device[] | "all" | undefined;
    if (values.devices !== undefined) {
      if (values.device !== undefined) throw new CandlewickError("Expected --device or --devices, not both, but received both", INVALID_OPTION);
      devices = values.devices === "all" ? "all" : values.devices.split(",").map((d, i) => checkDevice(d.trim(), `--devices[${i}]`));
    }
    return { limits, port, devices, load: loadOptionsFrom(values as Parameters<typeof loadOptionsFrom>[0]) };
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "serve");
    throw error;
  }
}
