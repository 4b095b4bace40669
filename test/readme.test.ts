// The README against the code: every error code that src/ or the Rust crates can throw is in the
// README's table of codes, and the table lists no code that nothing throws.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";

import { ROOT } from "./helpers/fixtures.js";

function filesUnder(dir: string, ext: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(ext)).map((f) => join(ROOT, dir, f));
}

const CODE = /ERR_CANDLEWICK_[A-Z][A-Z_]*[A-Z]/g;

test("every ERR_CANDLEWICK_ code in src/ and crates/ is in the README's error table, and only those", (t) => {
  const sources = [...filesUnder("src", ".ts"), ...filesUnder("crates", ".rs")];
  const thrown = new Set(sources.flatMap((file) => readFileSync(file, "utf8").match(CODE) ?? []));
  t.true(thrown.size >= 10, `${thrown.size} codes found`);
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("### Errors"), readme.indexOf("\n## ", readme.indexOf("### Errors")));
  const listed = new Set([...section.matchAll(/^\| `(ERR_CANDLEWICK_[A-Z_]+)` \|/gm)].map((m) => m[1]!));
  t.deepEqual([...thrown].filter((c) => !listed.has(c)).sort(), [], "thrown but not in the README");
  t.deepEqual([...listed].filter((c) => !thrown.has(c)).sort(), [], "in the README but thrown nowhere");
});
