// test/runtimes/smoke.mjs (the tiny model from scripts/make_fixtures.py, through the built dist/)
// under Node, Bun and Deno, so each runtime counts as a test. Builds dist/ first (tsc).

import { execFileSync } from "node:child_process";
import { cpSync } from "node:fs";
import { join } from "node:path";

import test from "ava";

import { ROOT } from "./helpers/fixtures.js";
import { runSmoke, runtimes } from "./runtimes/runtimes.mjs";

test.before(() => {
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json")], { stdio: "inherit" });
  cpSync(join(ROOT, "src/generated"), join(ROOT, "dist/generated"), { recursive: true });
});

for (const runtime of runtimes) {
  test.serial(`the smoke test passes under ${runtime.name}`, async (t) => {
    const { code, output } = await runSmoke(runtime);
    t.is(code, 0, output);
    t.regex(output, new RegExp(`smoke ok: ${runtime.name}`));
  });
}
