/**
 * `createServer()`: one model (a pipeline, or a pool over several devices) loaded once, behind
 * OpenAI's image API and AUTOMATIC1111's, with dynamic batching (./batcher.ts), a bounded queue,
 * body size limits, optional bearer-token auth and a small page to try it at `/` (./page.ts), with
 * live previews in /sdapi/v1/progress and a gallery of the images made since it started (./gallery.ts).
 *
 * Built on node:http: Node, Bun and Deno all implement it, it streams bodies (so the size limit
 * holds before a large body is read), and it shows when a client goes away (`res` "close" before
 * the answer is sent), which cancels that client's queued work. The routes are few and fixed, so
 * a framework's router would add a dependency without removing code.
 */

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { GeneratedImage } from "../image.js";
import { MAX_STEPS, type LoadOptions } from "../options.js";
import { StableDiffusionPipeline } from "../pipeline.js";
import { openModel, PipelinePool, type PoolOptions } from "../pool.js";
import { checkOptionsObject, integerIn, invalid } from "../validate.js";
import { imagesResponse, parseTxt2imgRequest, progressResponse, SAMPLER_NAMES } from "./a1111.js";
import { img2imgExtras, inWebUiNames, parseImg2imgRequest } from "./a1111-img2img.js";
import { DynamicBatcher, QueueFullError } from "./batcher.js";
import { Gallery } from "./gallery.js";
import { disconnectSignal, hasToken, HttpError, readJson, sendJson } from "./http.js";
import { openAiError, parseOpenAiRequest } from "./openai.js";
import { PAGE } from "./page.js";
import { modelFiles, type ModelFiles } from "../cli/hashes.js";
import { encodeImage, toBatchRequest, type ImageRequest } from "./request.js";

/** How `createServer` runs. */
export interface ServerOptions {
  /** The model: a loaded pipeline or pool (the server does not dispose it), or a folder / hub id to load. Required. */
  model: StableDiffusionPipeline | PipelinePool | string;
  /** Load options when `model` is a string (`devices` makes a pool). Default: none. */
  load?: LoadOptions & { devices?: PoolOptions["devices"] };
  /** Require `Authorization: Bearer <token>` on every route but GET /health. Default: none (no auth). */
  token?: string;
  /** The most images in one GPU batch. Default 8. */
  maxBatchSize?: number;
  /** How long a request waits for compatible requests to share its batch, in ms. Default 20. */
  batchWindowMs?: number;
  /** The most images waiting for a batch; beyond it requests get 503 with Retry-After. Default 64. */
  maxQueue?: number;
  /** The largest request body, in bytes; larger ones get 413. Default 1 MiB. */
  maxBodyBytes?: number;
  /** The largest body of a route that carries images (POST /sdapi/v1/img2img), in bytes. Default 16 MiB. */
  maxImageBodyBytes?: number;
  /** The model's name in answers and PNG text chunks. Default: `model` when a string, else the pipeline's folder. */
  modelName?: string;
  /** A preview of the latents every this many steps, for /sdapi/v1/progress's `current_image` and the page, 1-1000. Default 5. */
  previewEvery?: number;
  /** The newest images kept for the page's gallery (GET /gallery), 0 for none. Default 64. */
  galleryImages?: number;
}

/** Where and how to listen. */
export interface ListenOptions {
  /** Default 7860 (AUTOMATIC1111's port); 0 picks a free one. */
  port?: number;
  /** Default "127.0.0.1": only this machine. "0.0.0.0" opens it to the network (set a token). */
  host?: string;
}

export const DEFAULTS = { maxBatchSize: 8, batchWindowMs: 20, maxQueue: 64, maxBodyBytes: 1 << 20, maxImageBodyBytes: 16 << 20, previewEvery: 5, galleryImages: 64, port: 7860, host: "127.0.0.1" } as const;
const KEYS = ["model", "load", "token", "maxBatchSize", "batchWindowMs", "maxQueue", "maxBodyBytes", "maxImageBodyBytes", "modelName", "previewEvery", "galleryImages"] as const;

/** The server's options, checked, defaults filled in. */
type ServerSettings = Required<Omit<ServerOptions, "model" | "load" | "token">> & { token: string | undefined };

/** A running server. */
export class CandlewickServer {
  readonly #http: Server;
  readonly #batcher: DynamicBatcher;
  readonly #pipeline: StableDiffusionPipeline | PipelinePool;
  readonly #owned: boolean;
  readonly #o: ServerSettings;
  readonly #gallery: Gallery;

  /** @internal use `createServer` */
  constructor(pipeline: StableDiffusionPipeline | PipelinePool, owned: boolean, o: ServerSettings) {
    this.#pipeline = pipeline;
    this.#owned = owned;
    this.#o = o;
    this.#gallery = new Gallery(o.galleryImages);
    const concurrency = pipeline instanceof PipelinePool ? pipeline.size : 1;
    this.#batcher = new DynamicBatcher({
      generate: (options) => pipeline.generate(options),
      maxBatchSize: o.maxBatchSize,
      windowMs: o.batchWindowMs,
      maxQueue: o.maxQueue,
      concurrency,
      previewEvery: o.previewEvery,
    });
    this.#http = createHttpServer((req, res) => {
      this.#handle(req, res).catch((error: unknown) => this.#fail(req, res, error));
    });
  }

  /** Start listening; resolves with the server's URL ("http://127.0.0.1:7860"). */
  async listen(options: ListenOptions = {}): Promise<string> {
    const o = checkOptionsObject(options, "listen options", ["port", "host"]);
    const port = o.port === undefined ? DEFAULTS.port : integerIn(o.port, "port", 0, 65535);
    const host = o.host === undefined ? DEFAULTS.host : (o.host as string);
    if (typeof host !== "string" || host.length === 0) throw invalid("host name or address", "host", o.host);
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error & { code?: string }) => {
        reject(new CandlewickError(`cannot listen on ${host}:${port} (${error.code ?? error.message})`, "ERR_CANDLEWICK_LISTEN", { cause: error }));
      };
      this.#http.once("error", fail);
      this.#http.listen(port, host, () => {
        this.#http.off("error", fail);
        resolve();
      });
    });
    return this.url;
  }

  /** "http://host:port" once listening. */
  get url(): string {
    const address = this.#http.address() as AddressInfo | null;
    if (!address) throw new CandlewickError("the server is not listening", INVALID_OPTION);
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  }

  /** Stop taking connections, reject what is queued, and dispose the model when the server loaded it. */
  async close(): Promise<void> {
    this.#batcher.close();
    this.#http.closeAllConnections?.();
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
    if (this.#owned) await this.#pipeline.dispose();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const [path, query] = (req.url ?? "/").split("?") as [string, string | undefined];
    const route = `${req.method} ${path}`;
    if (route === "GET /health") return sendJson(res, 200, this.#health());
    if (this.#o.token !== undefined && !hasToken(req, this.#o.token)) {
      req.resume();
      throw new HttpError(401, "missing or wrong bearer token (send Authorization: Bearer <token>)", { "www-authenticate": "Bearer" });
    }
    switch (route) {
      case "GET /":
        res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
        return void res.end(PAGE);
      case "POST /v1/images/generations":
        return this.#openAi(req, res);
      case "POST /sdapi/v1/txt2img":
        return this.#txt2img(req, res);
      case "POST /sdapi/v1/img2img":
        return this.#img2img(req, res);
      case "GET /sdapi/v1/progress":
        return sendJson(res, 200, progressResponse(this.#batcher.state(), new URLSearchParams(query).get("skip_current_image") === "true"));
      case "POST /sdapi/v1/interrupt":
        req.resume();
        this.#batcher.interrupt();
        return sendJson(res, 200, {});
      case "GET /sdapi/v1/samplers":
        return sendJson(res, 200, SAMPLER_NAMES.map((name) => ({ name, aliases: [], options: {} })));
      case "GET /sdapi/v1/sd-models":
        return sendJson(res, 200, [{ title: this.#o.modelName, model_name: this.#o.modelName, filename: this.#pipeline.modelDir }]);
      case "GET /gallery":
        return sendJson(res, 200, this.#gallery.list());
    }
    req.resume();
    const image = /^\/gallery\/(\d+)\.png$/.exec(path);
    if (image && req.method === "GET") {
      const png = this.#gallery.png(Number(image[1]));
      if (!png) throw new HttpError(404, `no image ${image[1]} in the gallery (it keeps the newest ${this.#o.galleryImages})`);
      res.writeHead(200, { "content-type": "image/png", "content-length": png.length, "cache-control": "no-store" });
      return void res.end(png);
    }
    const known = ["/", "/health", "/gallery", "/v1/images/generations", "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt", "/sdapi/v1/samplers", "/sdapi/v1/sd-models"];
    if (known.includes(path)) throw new HttpError(405, `${req.method} is not allowed on ${path}`);
    throw new HttpError(404, `no route ${path}`);
  }

  #health(): unknown {
    const state = this.#batcher.state();
    const devices = this.#pipeline instanceof PipelinePool ? this.#pipeline.devices : [this.#pipeline.device];
    return { status: "ok", model: this.#o.modelName, devices, queued: state.queued, running: state.running.length };
  }

  async #openAi(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, this.#o.maxBodyBytes);
    const request = parseOpenAiRequest(body);
    const images = await this.#generate(request, res);
    if (!images) return;
    const files = await this.#files();
    const data = images.map((image) => ({ b64_json: this.#keep(image, request, files).png, seed: image.seed.toString() }));
    sendJson(res, 200, { created: Math.floor(Date.now() / 1000), data, output_format: "png" });
  }

  async #txt2img(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, this.#o.maxBodyBytes);
    const request = parseTxt2imgRequest(body);
    const images = await this.#generate(request, res);
    if (!images) return;
    const files = await this.#files();
    const made = images.map((image) => ({ ...this.#keep(image, request, files), seed: image.seed }));
    sendJson(res, 200, imagesResponse(body as Record<string, unknown>, request, made));
  }

  /**
   * img2img: each request's image is its own (a fresh Buffer, which the batch key tells apart), so
   * a request with an image never shares a GPU batch with another request; its own batch_size x
   * n_iter images run in one call.
   */
  async #img2img(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = (await readJson(req, this.#o.maxImageBodyBytes, "maxImageBodyBytes")) as Record<string, unknown>;
    const request = parseImg2imgRequest(body);
    const images = await this.#generate(request, res).catch((error: unknown) => {
      throw inWebUiNames(error);
    });
    if (!images) return;
    const files = await this.#files();
    const made = images.map((image) => ({ ...this.#keep(image, request, files), seed: image.seed }));
    const { info, parameters } = img2imgExtras(body, request, images);
    sendJson(res, 200, imagesResponse(parameters, request, made, info));
  }

  /** The image as a base64 PNG with its text chunks, and its infotext; kept in the gallery. */
  #keep(image: GeneratedImage, request: ImageRequest, files: ModelFiles): { png: string; infotext: string } {
    const encoded = encodeImage(image, request, this.#o.modelName, files);
    this.#gallery.add(Buffer.from(encoded.png, "base64"), image, request.prompt, encoded.infotext);
    return encoded;
  }

  /** The model file's and the fused LoRAs' hashes, as the PNGs record them (each file hashed once; none when a file cannot be read now). */
  async #files(): Promise<ModelFiles> {
    const pipe = "pipelines" in this.#pipeline ? this.#pipeline.pipelines[0]! : this.#pipeline;
    return modelFiles(pipe.modelDir, pipe.info.loras).catch(() => ({}));
  }

  /** Queue the request (cancelled when the client goes away); undefined when the client has gone. */
  async #generate(request: ImageRequest, res: ServerResponse) {
    const signal = disconnectSignal(res);
    try {
      return await this.#batcher.submit(toBatchRequest(request, signal));
    } catch (error) {
      if (signal.aborted) return undefined;
      throw error;
    }
  }

  #fail(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    const openAi = (req.url ?? "").startsWith("/v1/");
    let status = 500;
    let headers: Record<string, string> = {};
    let message = error instanceof Error ? error.message : String(error);
    if (error instanceof HttpError) [status, headers] = [error.status, error.headers];
    else if (error instanceof QueueFullError) [status, headers] = [503, { "retry-after": String(error.retryAfter) }];
    else if (error instanceof CandlewickError && error.code === INVALID_OPTION) status = 400;
    else if (error instanceof CandlewickError && error.name === "AbortError") [status, message] = [409, "interrupted (POST /sdapi/v1/interrupt)"];
    else if (error instanceof CandlewickError && error.code === "ERR_CANDLEWICK_DISPOSED") status = 503;
    if (status === 500) process.emitWarning(`candlewick server: ${message}`, "CandlewickWarning");
    if (openAi) return sendJson(res, status, openAiError(message, status), headers);
    const code = error instanceof CandlewickError ? error.code : error instanceof HttpError ? `HTTP_${status}` : "ERR_CANDLEWICK_INTERNAL";
    sendJson(res, status, { error: code, detail: message }, headers);
  }
}

/**
 * A server for one model: `model` a loaded pipeline or pool, or a folder / hub id to load now
 * (with `load`, or `load.devices` for a pool). Validates every option first, then loads.
 */
export async function createServer(options: ServerOptions): Promise<CandlewickServer> {
  const o = checkOptionsObject(options, "server options", KEYS) as Partial<ServerOptions>;
  const limits = {
    maxBatchSize: o.maxBatchSize === undefined ? DEFAULTS.maxBatchSize : integerIn(o.maxBatchSize, "maxBatchSize", 1, 64),
    batchWindowMs: o.batchWindowMs === undefined ? DEFAULTS.batchWindowMs : integerIn(o.batchWindowMs, "batchWindowMs", 0, 60_000),
    maxQueue: o.maxQueue === undefined ? DEFAULTS.maxQueue : integerIn(o.maxQueue, "maxQueue", 1, 1_000_000),
    maxBodyBytes: o.maxBodyBytes === undefined ? DEFAULTS.maxBodyBytes : integerIn(o.maxBodyBytes, "maxBodyBytes", 1024, 1 << 30),
    maxImageBodyBytes: o.maxImageBodyBytes === undefined ? DEFAULTS.maxImageBodyBytes : integerIn(o.maxImageBodyBytes, "maxImageBodyBytes", 1024, 1 << 30),
    previewEvery: o.previewEvery === undefined ? DEFAULTS.previewEvery : integerIn(o.previewEvery, "previewEvery", 1, MAX_STEPS),
    galleryImages: o.galleryImages === undefined ? DEFAULTS.galleryImages : integerIn(o.galleryImages, "galleryImages", 0, 10_000),
  };
  if (o.token !== undefined && (typeof o.token !== "string" || o.token.length === 0)) throw invalid("non-empty string", "token", o.token);
  if (o.modelName !== undefined && typeof o.modelName !== "string") throw invalid("string", "modelName", o.modelName);
  const { pipeline, owned } = await openModel(o.model, o.load);
  const modelName = o.modelName ?? (typeof o.model === "string" ? o.model : pipeline.modelDir);
  return new CandlewickServer(pipeline, owned, { ...limits, token: o.token, modelName });
}
