/** node:http plumbing for the server: size-limited JSON bodies, JSON replies, bearer tokens, HTTP errors. */

import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

/** An answer other than 200: the status, a message, extra headers. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}, readonly param?: string) {
    super(message);
    this.name = "HttpError";
  }
}

/**
 * The request's JSON body: 413 past `limit` bytes (before reading when Content-Length says so;
 * the message names `option`, the server option that sets the limit), 400 when not JSON.
 */
export async function readJson(req: IncomingMessage, limit: number, option = "maxBodyBytes"): Promise<unknown> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    throw new HttpError(413, `the request body is ${declared} bytes; this server takes at most ${limit} (its ${option} option)`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      req.resume();
      throw new HttpError(413, `the request body is over ${limit} bytes, the most this server takes (its ${option} option)`);
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new HttpError(400, `the request body is not JSON (${(error as Error).message})`);
  }
}

/** Send `body` as JSON with `status`. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Whether the request carries `Authorization: Bearer <token>` (compared in constant time). */
export function hasToken(req: IncomingMessage, token: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
  if (!match) return false;
  const given = Buffer.from(match[1]!.trim());
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** An AbortSignal that aborts when the client goes away before its answer is sent. */
export function disconnectSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) controller.abort(new Error("the client disconnected"));
  });
  return controller.signal;
}
