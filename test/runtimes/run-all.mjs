// `npm run test:runtimes`: the smoke test under Node, Bun and Deno (the ones installed in
// node_modules/.bin by the `bun` and `deno` npm packages). Needs `npm run build` first.

import { runtimes, runSmoke } from "./runtimes.mjs";

let failed = 0;
for (const runtime of runtimes) {
  const { code, output } = await runSmoke(runtime);
  process.stdout.write(`${runtime.name}: ${code === 0 ? "ok" : `FAILED (exit ${code})`}\n${output}`);
  if (code !== 0) failed++;
}
console.log(`${runtimes.length - failed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
