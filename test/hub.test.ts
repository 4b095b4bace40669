// Models by hub id, against the loopback hub of test/helpers/hub-server.ts serving the tiny model
// that scripts/make_fixtures.py wrote (test/fixtures/tiny-sd), plus files the pipeline does not
// need. Checks the cache layout huggingface_hub uses, what is (not) downloaded, offline mode,
// tokens, errors, and resuming after a dropped connection or an interrupted run. Serial: one server, one log.

import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readlinkSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

import test from "ava";

import { CandlewickError } from "../src/errors.js";
import { downloadPipeline, type DownloadProgress } from "../src/hub/download.js";
import { isRepoId } from "../src/hub/http.js";
import { resolveModel } from "../src/hub/resolve.js";
import { hubFilePath } from "../src/hub/single-file.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";
import { HubServer, filesOf, gitBlobSha1, sha256 } from "./helpers/hub-server.js";
import { tempDir } from "./helpers/temp.js";

const COMMIT = createHash("sha1").update("tiny-sd commit").digest("hex");
const TINY = filesOf(TINY_SD);
/** Files a real repository has beside the pipeline's: none of them may be downloaded. */
const EXTRAS: [string, Buffer][] = [
  ["README.md", Buffer.from("# tiny-sd\n")],
  ["unet/diffusion_pytorch_model.bin", Buffer.alloc(1000, 1)],
  ["safety_checker/config.json", Buffer.from("{}")],
  ["safety_checker/model.safetensors", Buffer.alloc(2000, 2)],
];
const CHECKPOINT = join(ROOT, "test/fixtures/single-file/tiny-sd.safetensors");
const CHECKPOINT_BYTES = readFileSync(CHECKPOINT);
const PIPELINE_FILES = [...TINY.keys()].filter((f) => !f.includes(".fp16.")).sort();
const FP16_FILES = [...TINY.keys()].filter((f) => !/(model|diffusion_pytorch_model)\.safetensors$/.test(f)).sort();


/**
 * `file` (a safetensors file) split into `n` shards named as diffusers' `save_pretrained` names
 * them, with its index: `{"metadata": {"total_size"}, "weight_map": {tensor: shard}}` at
 * `<stem>.safetensors.index[.variant].json` (diffusers 0.42.1, `_add_variant(SAFE_WEIGHTS_INDEX_NAME)`);
 * scripts/fixture_sharded.py checks that diffusers loads this split and saves under these names.
 */
function shard(path: string, file: Buffer, n: number, variant?: string): [string, Buffer][] {
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const names = Object.keys(header).filter((k) => k !== "__metadata__").sort();
  const per = Math.ceil(names.length / n);
  const folder = path.slice(0, path.lastIndexOf("/") + 1);
  const stem = "diffusion_pytorch_model";
  const out: [string, Buffer][] = [];
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let i = 0; i < n; i++) {
    // diffusers 0.42.1 puts the variant before the shard number (scripts/fixture_sharded.py checks the names).
    const shardName = `${stem}${variant ? `.${variant}` : ""}-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
    const entries: Record<string, unknown> = { __metadata__: { format: "pt" } };
    const parts: Buffer[] = [];
    let offset = 0;
    for (const name of names.slice(i * per, (i + 1) * per)) {
      const { dtype, shape, data_offsets: [start, end] } = header[name]!;
      parts.push(file.subarray(8 + headerLength + start, 8 + headerLength + end));
      entries[name] = { dtype, shape, data_offsets: [offset, offset + end - start] };
      offset += end - start;
      weightMap[name] = shardName;
    }
    totalSize += offset;
    const json = Buffer.from(JSON.stringify(entries));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    out.push([folder + shardName, Buffer.concat([length, json, ...parts])]);
  }
  const index = `${folder}${stem}.safetensors.index${variant ? `.${variant}` : ""}.json`;
  out.push([index, Buffer.from(JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2))]);
  return out;
}

/** tiny-sd with its UNet saved in shards, full precision (3 shards) and fp16 (2), and no single UNet file. */
const SHARDED = new Map<string, Buffer>([
  ...[...TINY].filter(([f]) => !f.startsWith("unet/diffusion_pytorch_model")),
  ...shard("unet/diffusion_pytorch_model.safetensors", TINY.get("unet/diffusion_pytorch_model.safetensors")!, 3),
  ...shard("unet/diffusion_pytorch_model.fp16.safetensors", TINY.get("unet/diffusion_pytorch_model.fp16.safetensors")!, 2, "fp16"),
]);

let hub: HubServer;

test.before(async () => {
  hub = await new HubServer().start();
  hub.addRepo("tiny/sd", { files: new Map([...TINY, ...EXTRAS]), commit: COMMIT });
  hub.addRepo("tiny/gated", { files: TINY, commit: COMMIT, token: "hf_secret" });
  const noUnet = new Map([...TINY].filter(([f]) => !f.startsWith("unet/diffusion_pytorch_model")));
  hub.addRepo("tiny/no-unet-weights", { files: noUnet, commit: COMMIT });
  hub.addRepo("tiny/new-name", { files: TINY, commit: COMMIT });
  hub.renamed.set("tiny/old-name", "tiny/new-name");
  hub.addRepo("tiny/sharded", { files: SHARDED, commit: COMMIT });
  const lostShard = new Map([...SHARDED].filter(([f]) => f !== "unet/diffusion_pytorch_model-00002-of-00003.safetensors"));
  hub.addRepo("tiny/lost-shard", { files: lostShard, commit: COMMIT });
  hub.addRepo("tiny/single", { files: new Map([["tiny-sd.safetensors", CHECKPOINT_BYTES], ["README.md", Buffer.from("# one file\n")], ...EXTRAS.slice(1)]), commit: COMMIT });
});

test.after.always(async () => {
  await hub?.close();
});

const cacheDir = () => tempDir("candlewick-hub-");
const options = (cache: string) => ({ cacheDir: cache, endpoint: hub.endpoint, offline: false, token: false as string | false });

/** Every file under `dir`, relative, sorted. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (sub: string) => {
    for (const entry of readdirSync(join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(rel);
      else out.push(rel);
    }
  };
  walk("");
  return out.sort();
}

test.serial("ids and paths are told apart", (t) => {
  for (const id of ["runwayml/stable-diffusion-v1-5", "org/name.v2", "a/b_c"]) t.true(isRepoId(id), id);
  for (const path of ["./org/name", "/abs/path", "org/name/unet", "../x", "org--x/name", "name", "org/name-", ""]) t.false(isRepoId(path), path);
});

test.serial("downloads only the pipeline's files into huggingface_hub's cache layout", async (t) => {
  const cache = cacheDir();
  const progress: DownloadProgress[] = [];
  const snapshot = await downloadPipeline("tiny/sd", { ...options(cache), onDownloadProgress: (p) => progress.push(p) });
  const root = join(cache, "models--tiny--sd");
  t.is(snapshot.dir, join(root, "snapshots", COMMIT));
  t.deepEqual(listing(snapshot.dir), PIPELINE_FILES);
  t.is(readFileSync(join(root, "refs/main"), "utf8"), COMMIT);
  for (const file of PIPELINE_FILES) {
    const data = TINY.get(file)!;
    const etag = file.endsWith(".safetensors") ? sha256(data) : gitBlobSha1(data);
    const depth = file.split("/").length;
    t.is(readlinkSync(join(snapshot.dir, file)), `${"../".repeat(depth + 1)}blobs/${etag}`, file);
    t.true(readFileSync(join(snapshot.dir, file)).equals(data), file);
  }
  t.deepEqual(readdirSync(join(root, "blobs")).filter((b) => b.endsWith(".incomplete")), []);
  // Nothing else was asked for.
  const fetched = hub.log.filter((r) => r.method === "GET" && r.url.includes("/resolve/")).map((r) => r.url);
  t.false(fetched.some((u) => /README|\.bin|safety_checker/.test(u)), fetched.join("\n"));
  const last = progress.at(-1)!;
  const weights = PIPELINE_FILES.filter((f) => f.endsWith(".safetensors")).reduce((n, f) => n + TINY.get(f)!.length, 0);
  t.true(last.total > weights && last.loaded === last.total, JSON.stringify(last));
});

test.serial("a second load uses the cache: one API call, no file requests", async (t) => {
  const cache = cacheDir();
  await downloadPipeline("tiny/sd", options(cache));
  const from = hub.log.length;
  const again = await downloadPipeline("tiny/sd", options(cache));
  t.deepEqual(again.downloaded, []);
  t.deepEqual(hub.log.slice(from).map((r) => `${r.method} ${r.url}`), ["GET /api/models/tiny/sd/revision/main"]);
});

test.serial('variant "fp16" downloads the fp16 weights only', async (t) => {
  const cache = cacheDir();
  const snapshot = await downloadPipeline("tiny/sd", { ...options(cache), variant: "fp16" });
  t.deepEqual(listing(snapshot.dir), FP16_FILES);
});

test.serial("an exception in onDownloadProgress rejects the download with it at once (not retried as a network failure)", async (t) => {
  const cache = cacheDir();
  const boom = new Error("boom");
  let throws = 0;
  // Thrown once bytes arrive (inside the download loop, which retries network failures).
  const onDownloadProgress = (p: DownloadProgress) => {
    if (p.fileLoaded === 0) return;
    throws++;
    throw boom;
  };
  await t.throwsAsync(downloadPipeline("tiny/sd", { ...options(cache), onDownloadProgress }), { is: boom });
  t.is(throws, 1);
  const snapshot = await downloadPipeline("tiny/sd", options(cache));
  t.deepEqual(listing(snapshot.dir), PIPELINE_FILES);
});

test.serial("offline mode never touches the network: the cache, or an error naming the repository", async (t) => {
  const cache = cacheDir();
  const from = hub.log.length;
  const error = await t.throwsAsync(downloadPipeline("tiny/sd", { ...options(cache), offline: true }), { instanceOf: CandlewickError });
  t.is(hub.log.length, from);
  t.is(error.code, "ERR_CANDLEWICK_HUB");
  // The option caused it, so the message says so (HF_HUB_OFFLINE is not set here).
  t.is(error.message, `tiny/sd (revision "main") is not in the cache at ${cache}, and the offline option (offline: true) does not download: run once with offline: false, online`);
  for (const [name, value] of [["HF_HUB_OFFLINE", "1"], ["TRANSFORMERS_OFFLINE", "yes"]] as const) {
    process.env[name] = value;
    try {
      const { offline: _, ...withoutOffline } = options(cache);
      const fromEnv = await t.throwsAsync(downloadPipeline("tiny/sd", withoutOffline), { instanceOf: CandlewickError });
      t.is(fromEnv.message, `tiny/sd (revision "main") is not in the cache at ${cache}, and offline mode (${name}=${value}) does not download: run once online, or unset ${name}`);
    } finally {
      delete process.env[name];
    }
  }
  await downloadPipeline("tiny/sd", options(cache));
  const mark = hub.log.length;
  process.env.HF_HUB_OFFLINE = "1";
  try {
    const { offline: _, ...withoutOffline } = options(cache);
    const snapshot = await downloadPipeline("tiny/sd", withoutOffline);
    t.deepEqual(listing(snapshot.dir), PIPELINE_FILES);
    // A commit hash needs no ref either.
    await downloadPipeline("tiny/sd", { ...withoutOffline, revision: COMMIT });
    // The fp16 files were never downloaded: offline, the cached full-precision weights stand in.
    const fallback = await downloadPipeline("tiny/sd", { ...withoutOffline, variant: "fp16", revision: COMMIT });
    t.deepEqual(fallback.files.filter((f) => f.endsWith(".safetensors")).sort(), PIPELINE_FILES.filter((f) => f.endsWith(".safetensors")));
  } finally {
    delete process.env.HF_HUB_OFFLINE;
  }
  t.is(hub.log.length, mark);
});

test.serial("HF_HUB_CACHE and HF_ENDPOINT are honoured", async (t) => {
  const cache = cacheDir();
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_ENDPOINT = `${hub.endpoint}/`;
  try {
    const snapshot = await downloadPipeline("tiny/sd", { offline: false, token: false });
    t.is(snapshot.dir, join(cache, "models--tiny--sd", "snapshots", COMMIT));
  } finally {
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_ENDPOINT;
  }
});

test.serial("gated models need HF_TOKEN; the token goes to the hub and never to the CDN", async (t) => {
  const cache = cacheDir();
  const denied = await t.throwsAsync(downloadPipeline("tiny/gated", options(cache)), { instanceOf: CandlewickError });
  t.is(denied.code, "ERR_CANDLEWICK_HUB_AUTH");
  t.is(denied.message, `tiny/gated on ${hub.endpoint} is gated (HTTP 401 GatedRepo): accept its conditions at ${hub.endpoint}/tiny/gated; no token was sent: set HF_TOKEN to a token of an account with access`);
  const wrong = await t.throwsAsync(downloadPipeline("tiny/gated", { ...options(cache), token: "hf_wrong" }), { instanceOf: CandlewickError });
  t.is(wrong.message, `tiny/gated on ${hub.endpoint} refused access to revision "main" (HTTP 401): the hub refused the token (HF_TOKEN)`);

  const from = hub.log.length;
  process.env.HF_TOKEN = "hf_secret";
  try {
    const { token: _, ...withoutToken } = options(cache);
    await downloadPipeline("tiny/gated", withoutToken);
  } finally {
    delete process.env.HF_TOKEN;
  }
  t.true(hub.requests("hub", from).every((r) => r.authorization === "Bearer hf_secret"));
  t.true(hub.requests("cdn", from).length > 0);
  t.true(hub.requests("cdn", from).every((r) => r.authorization === undefined));
});

test.serial("unknown repositories, revisions and missing files are errors that name them", async (t) => {
  const cache = cacheDir();
  const unknown = await t.throwsAsync(downloadPipeline("nobody/nothing", options(cache)), { instanceOf: CandlewickError });
  t.is(unknown.code, "ERR_CANDLEWICK_HUB_NOT_FOUND");
  t.is(unknown.message, `Repository nobody/nothing on ${hub.endpoint} was not found (HTTP 401 RepoNotFound). Check the id; if it is private or gated, no token was sent: set HF_TOKEN to a token of an account with access.`);
  const withToken = await t.throwsAsync(downloadPipeline("nobody/nothing", { ...options(cache), token: "hf_x" }));
  t.regex(withToken?.message ?? "", /\(HTTP 404 RepoNotFound\)/);
  const revision = await t.throwsAsync(downloadPipeline("tiny/sd", { ...options(cache), revision: "v9" }), { instanceOf: CandlewickError });
  t.is(revision.code, "ERR_CANDLEWICK_HUB_NOT_FOUND");
  t.is(revision.message, `tiny/sd on ${hub.endpoint} has no revision "v9" (HTTP 404 RevisionNotFound)`);
  const weights = await t.throwsAsync(downloadPipeline("tiny/no-unet-weights", options(cache)), { instanceOf: CandlewickError });
  t.is(weights.message, 'tiny/no-unet-weights (revision "main") lacks files the pipeline needs: unet weights (unet/diffusion_pytorch_model.safetensors or unet/diffusion_pytorch_model.fp16.safetensors, or a sharded index unet/diffusion_pytorch_model.safetensors.index.json; candlewick reads safetensors only)');
  t.false(existsSync(join(cache, "models--tiny--no-unet-weights", "blobs")));
});

test.serial("a renamed repository is followed", async (t) => {
  const snapshot = await downloadPipeline("tiny/old-name", options(cacheDir()));
  t.deepEqual(listing(snapshot.dir), PIPELINE_FILES);
});

test.serial("a connection dropped in the middle of a file is resumed with a Range request", async (t) => {
  const cache = cacheDir();
  const file = "unet/diffusion_pytorch_model.safetensors";
  const size = TINY.get(file)!.length;
  hub.dropAfter.set(file, Math.floor(size / 2));
  const from = hub.log.length;
  const snapshot = await downloadPipeline("tiny/sd", options(cache));
  t.false(hub.dropAfter.has(file), "the connection was dropped");
  t.true(readFileSync(join(snapshot.dir, file)).equals(TINY.get(file)!));
  const ranges = hub.requests("cdn", from).filter((r) => r.range).map((r) => r.range);
  t.deepEqual(ranges, [`bytes=${Math.floor(size / 2)}-`]);
});

test.serial("a download an earlier run left unfinished resumes from its .incomplete file", async (t) => {
  const cache = cacheDir();
  const file = "text_encoder/model.safetensors";
  const data = TINY.get(file)!;
  const blobs = join(cache, "models--tiny--sd", "blobs");
  mkdirSync(blobs, { recursive: true });
  writeFileSync(join(blobs, `${sha256(data)}.incomplete`), data.subarray(0, 1000));
  const from = hub.log.length;
  const snapshot = await downloadPipeline("tiny/sd", options(cache));
  t.true(readFileSync(join(snapshot.dir, file)).equals(data));
  t.deepEqual(hub.requests("cdn", from).filter((r) => r.range).map((r) => r.range), ["bytes=1000-"]);
});

test.serial("an unreachable hub falls back to a complete cached snapshot, else names the host", async (t) => {
  const cache = cacheDir();
  const closed = await new HubServer().start();
  const deadEndpoint = closed.endpoint;
  await closed.close();
  const error = await t.throwsAsync(downloadPipeline("tiny/sd", { ...options(cache), endpoint: deadEndpoint }), { instanceOf: CandlewickError });
  t.is(error.code, "ERR_CANDLEWICK_HUB");
  t.regex(error.message, new RegExp(`^Could not reach ${deadEndpoint} for tiny/sd \\(revision main\\) \\(ECONNREFUSED\\)`));
  await downloadPipeline("tiny/sd", options(cache));
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on("warning", onWarning);
  try {
    const snapshot = await downloadPipeline("tiny/sd", { ...options(cache), endpoint: deadEndpoint });
    t.is(snapshot.commit, COMMIT);
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off("warning", onWarning);
  }
  t.true(warnings.some((w) => w.includes(`using the cached snapshot ${COMMIT}`)), warnings.join("\n"));
});

test.serial("fromPretrained with a hub id generates what the local folder generates", async (t) => {
  const cache = cacheDir();
  const generate = { prompt: "a red apple", width: 32, height: 32, numInferenceSteps: 2, seed: 3 };
  const fromHub = await StableDiffusionPipeline.fromPretrained("tiny/sd", { ...options(cache), device: "cpu" });
  t.is(fromHub.modelDir, join(cache, "models--tiny--sd", "snapshots", COMMIT));
  const local = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  const [[a], [b]] = await Promise.all([fromHub.generate(generate), local.generate(generate)]);
  t.true(Buffer.from(a!.data).equals(b!.data), "same pixels");
  const missing = await t.throwsAsync(StableDiffusionPipeline.fromPretrained("nobody/nothing", options(cache)));
  t.regex(missing?.message ?? "", /\(There is no folder .*nobody\/nothing either\.\)$/);
});

test.serial("org/name/file.safetensors downloads just that file into the cache and loads it as a single-file checkpoint", async (t) => {
  t.deepEqual(hubFilePath("tiny/single/tiny-sd.safetensors"), { repoId: "tiny/single", file: "tiny-sd.safetensors" });
  t.deepEqual(hubFilePath("org/name/sub/model.safetensors"), { repoId: "org/name", file: "sub/model.safetensors" });
  for (const other of ["org/name", "org/name/model.ckpt", "./org/name/x.safetensors", "org/name/../x.safetensors", "org//x.safetensors"]) {
    t.is(hubFilePath(other), undefined, other);
  }
  const cache = cacheDir();
  const path = await resolveModel("tiny/single/tiny-sd.safetensors", options(cache));
  const root = join(cache, "models--tiny--single");
  t.is(path, join(root, "snapshots", COMMIT, "tiny-sd.safetensors"));
  t.deepEqual(listing(join(root, "snapshots", COMMIT)), ["tiny-sd.safetensors"], "only the file asked for");
  t.is(readlinkSync(path), `../../blobs/${sha256(CHECKPOINT_BYTES)}`);
  t.true(readFileSync(path).equals(CHECKPOINT_BYTES));
  // Offline, the cached copy; the pipeline loads it as the local file loads.
  const mark = hub.log.length;
  t.is(await resolveModel("tiny/single/tiny-sd.safetensors", { cacheDir: cache, offline: true }), path);
  t.is(hub.log.length, mark);
  const generate = { prompt: "a cat", numInferenceSteps: 1, width: 32, height: 32, seed: 3 };
  const fromHub = await StableDiffusionPipeline.fromPretrained("tiny/single/tiny-sd.safetensors", { ...options(cache), device: "cpu", config: TINY_SD });
  const local = await StableDiffusionPipeline.fromPretrained(CHECKPOINT, { device: "cpu", config: TINY_SD });
  const [[a], [b]] = await Promise.all([fromHub.generate(generate), local.generate(generate)]);
  t.true(Buffer.from(a!.data).equals(b!.data), "same pixels");
  await Promise.all([fromHub.dispose(), local.dispose()]);

  const missing = await t.throwsAsync(resolveModel("tiny/single/nope.safetensors", options(cache)), { instanceOf: CandlewickError });
  t.is(missing!.code, "ERR_CANDLEWICK_HUB_NOT_FOUND");
  t.is(missing!.message, 'tiny/single (revision "main") has no file nope.safetensors (its top-level .safetensors files: tiny-sd.safetensors)');
  const offline = await t.throwsAsync(resolveModel("tiny/single/nope.safetensors", { cacheDir: cache, offline: true }));
  t.regex(offline!.message, /^tiny\/single\/nope\.safetensors \(revision "main"\) is not in the cache at .*, and the offline option/);
});

/** Python with huggingface_hub (the fixtures' venv, or CANDLEWICK_PYTHON): the cache must be shared both ways. */
const PYTHON = process.env.CANDLEWICK_PYTHON ?? join(ROOT, ".venv/bin/python");
const hasHubPython = spawnSync(PYTHON, ["-c", "import huggingface_hub"]).status === 0;
const python = (code: string, env: NodeJS.ProcessEnv) =>
  promisify(execFile)(PYTHON, ["-c", code], { env: { ...process.env, HF_HUB_DISABLE_TELEMETRY: "1", HF_TOKEN: "", ...env }, encoding: "utf8" });

(hasHubPython ? test.serial : test.serial.skip)("Python's huggingface_hub and candlewick share the cache both ways", async (t) => {
  // Python downloads; candlewick finds it offline.
  const fromPython = cacheDir();
  const patterns = JSON.stringify(["*.json", "tokenizer/*.txt", "*/model.safetensors", "*/diffusion_pytorch_model.safetensors"]);
  const { stdout } = await python(`from huggingface_hub import snapshot_download\nprint(snapshot_download("tiny/sd", allow_patterns=${patterns}))`, { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: fromPython });
  const mark = hub.log.length;
  const found = await downloadPipeline("tiny/sd", { cacheDir: fromPython, offline: true });
  t.is(found.dir, stdout.trim());
  t.is(hub.log.length, mark);

  // candlewick downloads; Python finds every file offline, at the same paths.
  const fromNode = cacheDir();
  const snapshot = await downloadPipeline("tiny/sd", options(fromNode));
  const code = `import json\nfrom huggingface_hub import hf_hub_download, snapshot_download\nfiles = ${JSON.stringify(snapshot.files)}\nprint(json.dumps([snapshot_download("tiny/sd", local_files_only=True)] + [hf_hub_download("tiny/sd", f, local_files_only=True) for f in files]))`;
  const paths = JSON.parse((await python(code, { HF_HUB_CACHE: fromNode, HF_HUB_OFFLINE: "1" })).stdout) as string[];
  t.deepEqual(paths, [snapshot.dir, ...snapshot.files.map((f) => join(snapshot.dir, f))]);
});

(hasHubPython ? test.serial : test.serial.skip)("a hub file candlewick downloaded is where Python's hf_hub_download finds it", async (t) => {
  const cache = cacheDir();
  const path = await resolveModel("tiny/single/tiny-sd.safetensors", options(cache));
  const code = `from huggingface_hub import hf_hub_download\nprint(hf_hub_download("tiny/single", "tiny-sd.safetensors", local_files_only=True))`;
  t.is((await python(code, { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" })).stdout.trim(), path);
});

test.serial("a sharded UNet: its index and the shards it names are downloaded, and it generates what the single file does", async (t) => {
  const cache = cacheDir();
  const snapshot = await downloadPipeline("tiny/sharded", options(cache));
  const full = [...SHARDED.keys()].filter((f) => !f.includes("fp16")).sort();
  t.deepEqual(listing(snapshot.dir), full);
  t.true(full.includes("unet/diffusion_pytorch_model-00003-of-00003.safetensors") && full.includes("unet/diffusion_pytorch_model.safetensors.index.json"));
  t.deepEqual([...snapshot.files].sort(), full);
  for (const file of full) t.true(readFileSync(join(snapshot.dir, file)).equals(SHARDED.get(file)!), file);
  // Cached: one API call; offline: none.
  const from = hub.log.length;
  t.deepEqual((await downloadPipeline("tiny/sharded", options(cache))).downloaded, []);
  t.is(hub.log.length, from + 1);
  const offline = await downloadPipeline("tiny/sharded", { ...options(cache), offline: true });
  t.deepEqual([...offline.files].sort(), full);
  t.is(hub.log.length, from + 1);

  const generate = { prompt: "a red apple", width: 32, height: 32, numInferenceSteps: 2, seed: 3 };
  const fromHub = await StableDiffusionPipeline.fromPretrained("tiny/sharded", { ...options(cache), device: "cpu", dtype: "f32" });
  const local = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu", dtype: "f32" });
  const [[a], [b]] = await Promise.all([fromHub.generate(generate), local.generate(generate)]);
  t.true(Buffer.from(a!.data).equals(b!.data), "same pixels");
});

test.serial('variant "fp16" downloads the fp16 index and its shards', async (t) => {
  const cache = cacheDir();
  const snapshot = await downloadPipeline("tiny/sharded", { ...options(cache), variant: "fp16" });
  const unet = listing(snapshot.dir).filter((f) => f.startsWith("unet/") && f !== "unet/config.json");
  t.deepEqual(unet, [
    "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
  ]);
  // Offline, a cache missing a shard the index names is not a whole snapshot.
  rmSync(join(snapshot.dir, unet[1]!));
  const error = await t.throwsAsync(downloadPipeline("tiny/sharded", { ...options(cache), variant: "fp16", offline: true }), { instanceOf: CandlewickError });
  t.true(error.message.includes(`lacks ${unet[1]}`), error.message);
});

test.serial("an index naming a shard the repository lacks is an error naming the shard", async (t) => {
  const cache = cacheDir();
  const error = await t.throwsAsync(downloadPipeline("tiny/lost-shard", options(cache)), { instanceOf: CandlewickError });
  t.is(error.code, "ERR_CANDLEWICK_HUB_NOT_FOUND");
  t.is(error.message, 'tiny/lost-shard (revision "main") lacks files the pipeline needs: unet/diffusion_pytorch_model-00002-of-00003.safetensors (named by its index\'s weight_map)');
});
