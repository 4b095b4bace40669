/** `candlewick convert <checkpoint.safetensors> <out-folder>`: a single-file checkpoint as a diffusers folder. */

import { convertSingleFile } from "../convert.js";
import { parseFlags } from "./flags.js";
import { UsageError } from "./usage.js";

export const CONVERT_HELP = `Usage: candlewick convert <checkpoint.safetensors> <out-folder> --config <dir> [options]

Write a single-file Stable Diffusion checkpoint (.safetensors in the original layout, as A1111 and
ComfyUI use; SD1.x, SD1.x inpainting, SD2.x, SDXL base and refiner) as a diffusers folder. Loading a checkpoint needs no
conversion (candlewick generate --model model.safetensors --config <dir>); this is for tools that
read folders only. .ckpt / .pt files are refused: unpickling them can run arbitrary code.

Options:
  --config <dir>    A diffusers folder of the checkpoint's family with the tokenizer(s) it lacks
                    (tokenizer/ and, for SDXL, tokenizer_2/: vocab.json, merges.txt) and its configs
                    (required for SD2.x and SDXL; else diffusers' SD1.x defaults)
  --quiet, -q       No messages on stderr
  --help, -h        Show this help

Example:
  candlewick convert dreamshaper_8.safetensors ./dreamshaper-8 --config ./stable-diffusion-v1-5
`;

const OPTIONS = {
  config: { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const;

export async function convert(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "convert");
  if (values.help) {
    process.stdout.write(CONVERT_HELP);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(`expected <checkpoint.safetensors> <out-folder>, received ${positionals.length} argument(s)`, "convert");
  }
  const [checkpoint, out] = positionals as [string, string];
  const result = await convertSingleFile(checkpoint, out, values.config === undefined ? {} : { config: values.config });
  if (!values.quiet) process.stderr.write(`Wrote ${result.folder} (${result.modelType}, ${result.files.length} files)\n`);
  return 0;
}
