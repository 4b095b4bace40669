/**
 * The queue's settings shared by producers and workers: the Redis URL as BullMQ's connection
 * options, the queue's name, and a job's data (JSON, so seeds travel as decimal strings).
 */

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import type { BatchInput } from "../batch/inputs.js";
import { invalid } from "../validate.js";

/** Where Redis is, as ioredis (under BullMQ) takes it. */
export interface RedisConnection {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db?: number;
  tls?: Record<string, never>;
  maxRetriesPerRequest: number | null;
}

/** The queue's name when none is given. */
export const DEFAULT_QUEUE_NAME = "candlewick";

/** What one job carries: a BatchInput with its seed as a decimal string, and where it came from. */
export interface JobData {
  input: Omit<BatchInput, "seed"> & { seed?: string };
  /** The prompts file's line, when it came from one. */
  line?: number;
  /** The line's "id", when it had one. */
  id?: string | number;
}

/**
 * "redis://[user:password@]host[:port][/db]" (or rediss:// for TLS) as BullMQ's connection
 * options. Workers need `maxRetriesPerRequest: null` (BullMQ's rule: a blocking command must wait
 * through a reconnect instead of failing), so every command waits for Redis to come back.
 */
export function connectionFrom(url: unknown, option = "queue"): RedisConnection {
  if (typeof url !== "string") throw invalid("redis:// URL", option, url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid("redis:// URL", option, url);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") throw invalid("redis:// or rediss:// URL", option, url);
  const db = parsed.pathname.replace(/^\//, "");
  if (db !== "" && !/^\d+$/.test(db)) throw new CandlewickError(`Expected database number after the host in ${option} but received "${url}"`, INVALID_OPTION);
  return {
    host: parsed.hostname || "127.0.0.1",
    port: parsed.port ? Number(parsed.port) : 6379,
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(parsed.protocol === "rediss:" ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/** A queue name: BullMQ keys are `bull:<name>:...`, so no colon. */
export function queueName(value: unknown, option = "queueName"): string {
  if (value === undefined) return DEFAULT_QUEUE_NAME;
  if (typeof value !== "string" || !/^[A-Za-z0-9_.-]{1,100}$/.test(value)) throw invalid("1-100 letters, digits, _ . or -", option, value);
  return value;
}
