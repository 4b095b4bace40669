// `candlewick generate --model org/name` against the loopback hub of test/helpers/hub-server.ts
// serving the tiny model from scripts/make_fixtures.py: the download progress on stderr, offline
// mode from the environment, and a read-only cache (as an unprivileged user when the tests run as
// root): an error naming the cache when files must be downloaded, and no error when all are there.

import { createHash } from "node:crypto";
import { chmodSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

import test from "ava";

import { cliWith, readOnlyDir, scratch } from "./helpers/cli.js";
import { readTextChunks } from "../src/png-text.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";
import { HubServer, filesOf } from "./helpers/hub-server.js";

const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const ARGS = ["--steps", "1", "--width", "32", "--height", "32", "--seed", "1"];
let hub: HubServer;

test.before(async () => {
  hub = await new HubServer().start();
  hub.addRepo("tiny/sd", { files: filesOf(TINY_SD), commit: COMMIT });
  hub.addRepo("tiny/single", { files: new Map([["tiny-sd.safetensors", readFileSync(CHECKPOINT)]]), commit: COMMIT });
});

const CHECKPOINT = join(ROOT, "test/fixtures/single-file/tiny-sd.safetensors");

test.after.always(async () => {
  await hub?.close();
});

const envFor = (cache: string, extra: NodeJS.ProcessEnv = {}) => ({ HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_HOME: scratch(), HF_TOKEN: "", HF_HUB_OFFLINE: "", ...extra });

/** Make every folder under `dir` read-only (files stay readable). */
function freeze(dir: string): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) freeze(path);
  }
  chmodSync(dir, 0o555);
}

test.serial("a hub id downloads with progress on stderr, then offline mode uses the cache", async (t) => {
  const cache = scratch();
  const out = join(scratch(), "a.png");
  const first = await cliWith({ env: envFor(cache) }, "generate", "a red apple", "--model", "tiny/sd", ...ARGS, "--out", out);
  t.is(first.code, 0, first.stderr);
  t.is(first.stdout, `${out}\n`);
  for (const file of ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]) {
    t.regex(first.stderr, new RegExp(`^downloaded tiny/sd/${file} \\([\\d.]+ MB\\)$`, "m"));
  }
  const from = hub.log.length;
  const offline = await cliWith({ env: envFor(cache, { HF_HUB_OFFLINE: "1" }) }, "generate", "a red apple", "--model", "tiny/sd", ...ARGS, "--out", out, "--quiet");
  t.is(offline.code, 0, offline.stderr);
  t.is(hub.log.length, from, "offline mode made no request");
  const missing = await cliWith({ env: envFor(scratch(), { HF_HUB_OFFLINE: "1" }) }, "generate", "x", "--model", "tiny/sd", "--quiet");
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^candlewick: tiny\/sd \(revision "main"\) is not in the cache at .*offline mode \(HF_HUB_OFFLINE=1\) does not download/);
});

test.serial("a read-only cache: an error naming it when a download is needed, none when everything is cached", async (t) => {
  const cache = readOnlyDir();
  // --out in a writable folder: the output is checked first, and the cache is what this is about.
  const denied = await cliWith({ env: envFor(cache), unprivileged: true }, "generate", "x", "--model", "tiny/sd", "--out", join(scratch(), "x.png"), "--quiet");
  t.is(denied.code, 1);
  t.is(denied.stderr, `candlewick: Cannot write to the Hugging Face cache at ${join(cache, "models--tiny--sd", "blobs")} (EACCES: it is read-only). Set HF_HUB_CACHE (or HF_HOME, or the cacheDir option) to a writable folder, or free some space.\n`);

  const filled = scratch();
  const download = await cliWith({ env: envFor(filled) }, "generate", "x", "--model", "tiny/sd", ...ARGS, "--out", join(scratch(), "x.png"), "--quiet");
  t.is(download.code, 0, download.stderr);
  freeze(filled);
  const out = join(scratch(), "y.png");
  const cached = await cliWith({ env: envFor(filled), unprivileged: true }, "generate", "x", "--model", "tiny/sd", ...ARGS, "--out", out, "--quiet");
  t.is(cached.code, 0, cached.stderr);
  t.is(cached.stdout, `${out}\n`);
});

test.serial("unknown ids and revisions exit 1 naming them", async (t) => {
  const env = envFor(scratch());
  const unknown = await cliWith({ env }, "generate", "x", "--model", "nobody/nothing", "--quiet");
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /^candlewick: Repository nobody\/nothing on http:\/\/127\.0\.0\.1:\d+ was not found \(HTTP 401 RepoNotFound\)\. .*\(There is no folder .*nobody\/nothing either\.\)\n$/);
  const revision = await cliWith({ env }, "generate", "x", "--model", "tiny/sd", "--revision", "v2", "--quiet");
  t.regex(revision.stderr, /^candlewick: tiny\/sd on .* has no revision "v2" \(HTTP 404 RevisionNotFound\)\n$/);
});

test.serial("--model org/name/file.safetensors downloads that one file, loads it as a checkpoint and records its hash", async (t) => {
  const cache = scratch();
  const env = envFor(cache);
  const out = join(scratch(), "hub.png");
  const run = await cliWith({ env }, "generate", "a cat", "--model", "tiny/single/tiny-sd.safetensors", "--config", TINY_SD, ...ARGS, "--out", out);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(readdirSync(join(cache, "models--tiny--single/snapshots", COMMIT)), ["tiny-sd.safetensors"]);
  const text = readTextChunks(readFileSync(out));
  t.is(text.modelHash, createHash("sha256").update(readFileSync(CHECKPOINT)).digest("hex").slice(0, 10));
  t.regex(text.parameters!, /, Model hash: [0-9a-f]{10}, Model: tiny\/single\/tiny-sd\.safetensors/);
  const missing = await cliWith({ env }, "generate", "x", "--model", "tiny/single/other.safetensors", "--config", TINY_SD, "--quiet");
  t.is(missing.code, 1);
  t.is(missing.stderr, 'candlewick: tiny/single (revision "main") has no file other.safetensors (its top-level .safetensors files: tiny-sd.safetensors)\n');
});
