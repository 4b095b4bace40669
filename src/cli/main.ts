#!/usr/bin/env node
/** The `candlewick` command: dispatches to one file per command. Exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted. */

import { createRequire } from "node:module";

import { BATCH_HELP, batch } from "./batch.js";
import { CONVERT_HELP, convert } from "./convert.js";
import { DEMO_HELP, demo } from "./demo.js";
import { GENERATE_HELP, generate, IMG2IMG_HELP, INPAINT_HELP } from "./generate.js";
import { ENQUEUE_HELP, enqueueCommand } from "./enqueue.js";
import { SERVE_HELP, serve } from "./serve.js";
import { WORKER_HELP, workerCommand } from "./worker.js";
import { UsageError } from "./usage.js";

const HELP = `Usage: candlewick <command> [options]

Stable Diffusion from the command line.

Commands:
  generate <prompt>   Generate images from text (candlewick generate --help)
  img2img <prompt>    Redraw a picture after a prompt: --image <file> (candlewick img2img --help)
  inpaint <prompt>    Repaint the white part of a mask: --image <file> --mask <file> (candlewick inpaint --help)
  batch <file.jsonl>  Generate one image per line of a prompts file, resumably (candlewick batch --help)
  convert <ckpt> <dir> Write a single-file checkpoint as a diffusers folder (candlewick convert --help)
  demo                Draw eight prompts with the bundled model into one grid PNG (candlewick demo --help)
  serve               Serve a model over HTTP: OpenAI's and AUTOMATIC1111's APIs (candlewick serve --help)
  enqueue <file>      Add one job per line to a BullMQ queue in Redis (candlewick enqueue --help)
  worker              Make the images of a BullMQ queue's jobs (candlewick worker --help)

Options:
  -h, --help          Show this help
  -v, --version       Print candlewick's version
`;

const COMMAND_HELP: Record<string, string> = {
  generate: GENERATE_HELP, img2img: IMG2IMG_HELP, inpaint: INPAINT_HELP, batch: BATCH_HELP, convert: CONVERT_HELP, demo: DEMO_HELP,
  serve: SERVE_HELP, enqueue: ENQUEUE_HELP, worker: WORKER_HELP,
};

export async function main(args: readonly string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case undefined:
        process.stderr.write(HELP);
        return 2;
      case "-h":
      case "--help":
      case "help":
        process.stdout.write(COMMAND_HELP[rest[0] ?? ""] ?? HELP);
        return 0;
      case "-v":
      case "--version":
        process.stdout.write(`${version()}\n`);
        return 0;
      case "generate":
      case "img2img":
      case "inpaint":
        return await generate(rest, command);
      case "batch":
        return await batch(rest);
      case "demo":
        return await demo(rest);
      case "convert":
        return await convert(rest);
      case "serve":
        return await serve(rest);
      case "enqueue":
        return await enqueueCommand(rest);
      case "worker":
        return await workerCommand(rest);
      default:
        throw new UsageError(command.startsWith("-") ? `unknown option ${command}` : `unknown command "${command}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`candlewick: ${error.message}\nRun "candlewick ${error.command ? `${error.command} ` : ""}--help" for usage.\n`);
      return 2;
    }
    throw error;
  }
}

function version(): string {
  const require = createRequire(import.meta.url);
  return (require("../../package.json") as { version: string }).version;
}

process.exitCode = await main(process.argv.slice(2));
