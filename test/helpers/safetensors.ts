// A minimal reader of the safetensors format (8-byte little-endian header length, JSON header,
// raw little-endian data), for the goldens that scripts/make_fixtures.py writes with
// safetensors.torch.save_file. No npm package for it is available here.

import { readFileSync } from "node:fs";

export interface Tensor {
  dtype: string;
  shape: number[];
  data: Float32Array | Uint8Array | BigInt64Array;
}

const ARRAYS = { F32: Float32Array, U8: Uint8Array, I64: BigInt64Array } as const;

export function readSafetensors(path: string): Map<string, Tensor> {
  const file = readFileSync(path);
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const body = 8 + headerLength;
  const tensors = new Map<string, Tensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const Array_ = ARRAYS[entry.dtype as keyof typeof ARRAYS];
    if (!Array_) throw new Error(`${path}: tensor ${name} has dtype ${entry.dtype}; this reader knows ${Object.keys(ARRAYS).join(", ")}`);
    const [start, end] = entry.data_offsets;
    // Copy into a fresh, aligned buffer.
    const bytes = new Uint8Array(file.subarray(body + start, body + end));
    tensors.set(name, { dtype: entry.dtype, shape: entry.shape, data: new Array_(bytes.buffer, 0, (end - start) / Array_.BYTES_PER_ELEMENT) });
  }
  return tensors;
}
