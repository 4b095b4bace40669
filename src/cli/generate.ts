/**
 * `candlewick generate <prompt>` (and `img2img`, `inpaint`: the same with --image, --mask,
 * --strength): check that the output files can be written, load a model, generate, write PNG files
 * that carry their generation parameters (as `batch` writes them), print their paths.
 */

import { extname } from "node:path";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { GeneratedImage } from "../image.js";
import { strength } from "../check-options.js";
import { MAX_IMAGES_PER_PROMPT, MAX_SIDE, MAX_STEPS, type GenerateOptions, type LoadOptions, type PreviewImage } from "../options.js";
import { count, integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, loadOptionsFrom, number, parseFlags, seedFrom, settingsFrom, type Settings } from "./flags.js";
import { DEFAULT_MODEL, loadModel } from "./model.js";
import { readImage } from "../image-input.js";
import { checkOutputFiles, writeFileAtomically } from "./output.js";
import { loraRecords, modelHashOf } from "./hashes.js";
import { imageParameters, pngText, resolvedOf } from "./parameters.js";
import { ProgressDisplay } from "./progress.js";
import { UsageError } from "./usage.js";

export const GENERATE_HELP = `Usage: candlewick generate <prompt> [options]

Generate images from a text prompt and write them as PNG files (their paths go to stdout), with
their generation parameters in text chunks (as web UIs read them).

Options:
${COMMON_HELP.model}
  --out, -o <file.png>      Output file, its folder created if missing; with --num-images N,
                            file-1.png ... file-N.png (default: image.png)
${COMMON_HELP.settings}
  --seed <n>                Seed, 0 to 2^64-1 (default: random, printed)
  --num-images <n>          Images to generate, 1-${MAX_IMAGES_PER_PROMPT} (default: 1)
  --preview <file.png>      Write a small preview of the (first) image's latents there while it
                            denoises (every --preview-every steps, default 5, and after the last)
  --preview-every <n>       Steps between previews, 1-${MAX_STEPS} (default: 5)
${COMMON_HELP.device}

Example:
  candlewick generate "a red apple" --model ./stable-diffusion-v1-5 --steps 30 --seed 1 --out apple.png
`;

const IMAGE_HELP = `  --image <file>            The picture to start from: PNG, JPEG or WebP (required); the output takes
                            its size rounded down to a multiple of 8 unless --width and --height are given
  --strength <x>            How much of it to repaint, > 0 and <= 1: the share of --steps that runs`;

export const IMG2IMG_HELP = `Usage: candlewick img2img <prompt> --image <file> [options]

Redraw a picture after a text prompt (diffusers' StableDiffusionImg2ImgPipeline) and write the
results as PNG files (their paths go to stdout), with their generation parameters in text chunks.

Options:
${IMAGE_HELP} (default: 0.8; SDXL: 0.3)
${GENERATE_HELP.split("Options:\n")[1]!.split("\nExample:")[0]}
Example:
  candlewick img2img "a watercolor painting" --image photo.jpg --strength 0.6 --seed 1 --out painted.png
`;

export const INPAINT_HELP = `Usage: candlewick inpaint <prompt> --image <file> --mask <file> [options]

Repaint the white part of a mask over a picture (diffusers' StableDiffusionInpaintPipeline, or
StableDiffusionXLInpaintPipeline for SDXL), with an inpainting model (a UNet of 9 input channels,
such as sd-v1-5-inpainting) or an ordinary one, and write the results as PNG files (their paths go
to stdout).

Options:
${IMAGE_HELP} (default: 1; SDXL: 0.9999)
  --mask <file>             White = repaint, black = keep: PNG, JPEG or WebP of the image's size, no
                            alpha channel (required)
  --padding-mask-crop <n>   Inpaint only the box around the mask, n >= 0 pixels wider each side, at
                            --width x --height, then paste it back (diffusers' padding_mask_crop;
                            the output keeps the image's size; default: the whole image)
${GENERATE_HELP.split("Options:\n")[1]!.split("\nExample:")[0]}
Example:
  candlewick inpaint "a red apple" --image table.png --mask mask.png --seed 1 --out apple.png
`;

const OPTIONS = {
  ...COMMON_FLAGS,
  out: { type: "string", short: "o" },
  "num-images": { type: "string" },
  preview: { type: "string" },
  "preview-every": { type: "string" },
} as const;
const IMAGE_OPTIONS = { ...OPTIONS, image: { type: "string" }, strength: { type: "string" } } as const;
const INPAINT_OPTIONS = { ...IMAGE_OPTIONS, mask: { type: "string" }, "padding-mask-crop": { type: "string" } } as const;

/** The commands this file runs: text to image, image to image, inpainting. */
export type GenerateCommand = "generate" | "img2img" | "inpaint";

const HELP: Record<GenerateCommand, string> = { generate: GENERATE_HELP, img2img: IMG2IMG_HELP, inpaint: INPAINT_HELP };

/** Run the command; returns the exit code. */
export async function generate(args: readonly string[], command: GenerateCommand = "generate"): Promise<number> {
  const flags = command === "generate" ? OPTIONS : command === "img2img" ? IMAGE_OPTIONS : INPAINT_OPTIONS;
  const imageFlag = command === "generate" && args.find((a) => /^--(image|mask|strength)(=|$)/.test(a));
  if (imageFlag) throw new UsageError(`${imageFlag.split("=")[0]} is for the img2img and inpaint commands (candlewick img2img <prompt> --image <file>)`, command);
  const { values, positionals } = parseFlags(args, flags as typeof INPAINT_OPTIONS, command);
  if (values.help) {
    process.stdout.write(HELP[command]);
    return 0;
  }
  if (positionals.length !== 1) {
    const problem = positionals.length === 0 ? "missing the prompt" : `expected one prompt but received ${positionals.length} (quote the prompt)`;
    throw new UsageError(problem, command);
  }
  if (command !== "generate" && values.image === undefined) throw new UsageError("missing --image <file>", command);
  if (command === "inpaint" && values.mask === undefined) throw new UsageError("missing --mask <file>", command);
  let load: LoadOptions;
  let settings: Settings;
  let options: GenerateOptions;
  try {
    load = loadOptionsFrom(values);
    settings = settingsFrom(values);
    options = { ...settings, prompt: positionals[0]! };
    if (values.seed !== undefined) options.seed = seedFrom(values.seed);
    if (values["num-images"] !== undefined) {
      options.numImagesPerPrompt = integerIn(integer(values["num-images"]), "--num-images", 1, MAX_IMAGES_PER_PROMPT);
    }
    if (values["preview-every"] !== undefined) options.previewEvery = integerIn(integer(values["preview-every"]), "--preview-every", 1, MAX_STEPS);
    else if (values.preview !== undefined) options.previewEvery = 5;
    if (values.image !== undefined) options.image = values.image;
    if (values.mask !== undefined) options.maskImage = values.mask;
    if (values.strength !== undefined) options.strength = strength(number(values.strength), "--strength");
    if (values["padding-mask-crop"] !== undefined) {
      options.paddingMaskCrop = integerIn(integer(values["padding-mask-crop"]), "--padding-mask-crop", 0, MAX_SIDE);
    }
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, command);
    throw error;
  }
  if (values.out !== undefined && extname(values.out).toLowerCase() !== ".png") {
    throw new UsageError(`Expected a file name ending in .png for --out but received ${JSON.stringify(values.out)}`, command);
  }
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    // A folder that cannot take the files is found before the model loads.
    const paths = outputPaths(values.out ?? "image.png", options.numImagesPerPrompt ?? 1);
    await checkOutputFiles(values.preview === undefined ? paths : [...paths, values.preview]);
    // An image that cannot be read is found before the model loads too.
    if (values.image !== undefined) options.image = (await readImage({ path: values.image }, "--image")).data;
    if (values.mask !== undefined) options.maskImage = (await readImage({ path: values.mask }, "--mask")).data;
    // A missing or damaged LoRA file is named before the model loads; its hash is what the PNG records.
    const loras = await loraRecords(load.loras ?? []);
    // A local checkpoint file is hashed while the model loads (the same hash, from the cache, is read after).
    if (values.model !== undefined) void modelHashOf(values.model).catch(() => undefined);
    const pipe = await loadModel(values.model, { ...load, signal: controller.signal }, quiet, say);
    const modelHash = await modelHashOf(pipe.modelDir);
    const progress = new ProgressDisplay(process.stderr);
    const previews: Promise<void>[] = [];
    const images = await pipe.generate({
      ...options,
      signal: controller.signal,
      onProgress: (p) => {
        if (!quiet) progress.step(p);
        const first = p.preview?.[0];
        if (first && values.preview !== undefined) previews.push(writePreview(values.preview, first));
      },
      onWarning: (message) => say(`warning: ${message}`),
    }).finally(() => progress.finish());
    await Promise.all(previews);
    const model = values.model ?? DEFAULT_MODEL;
    for (const [i, image] of images.entries()) {
      const parameters = imageParameters(settings, positionals[0]!, values["negative-prompt"] ?? "", image.seed, resolvedOf(image), model, { modelHash, loras });
      await writeFileAtomically(paths[i]!, image.toPng({ text: pngText(parameters) }));
      process.stdout.write(`${paths[i]}\n`);
    }
    const seeds = images.map((image) => image.seed).join(", ");
    say(`Wrote ${count(images.length, "image")} of ${images[0]?.width}x${images[0]?.height}, ${images.length === 1 ? "seed" : "seeds"} ${seeds}`);
    return 0;
  } catch (error) {
    return reportError(error);
  } finally {
    process.off("SIGINT", onSigint);
  }
}

/** A CandlewickError on stderr and its exit code (130 for an interruption); anything else is rethrown. */
export function reportError(error: unknown, interrupted = "candlewick: interrupted\n"): number {
  if (!(error instanceof CandlewickError)) throw error;
  if (error.name === "AbortError") {
    process.stderr.write(interrupted);
    return 130;
  }
  process.stderr.write(`candlewick: ${error.message}\n`);
  return error.code === INVALID_OPTION ? 2 : 1;
}

/** A preview as a PNG file, written whole (the last one written wins). */
let previewWrites = Promise.resolve();
function writePreview(path: string, preview: PreviewImage): Promise<void> {
  const png = new GeneratedImage(preview.width, preview.height, preview.data, 0n).toPng();
  previewWrites = previewWrites.then(() => writeFileAtomically(path, png));
  return previewWrites;
}

/** image.png for one image; image-1.png ... image-N.png for several. */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = extname(out);
  const stem = out.slice(0, out.length - ext.length);
  return Array.from({ length: count }, (_, i) => `${stem}-${i + 1}${ext}`);
}
