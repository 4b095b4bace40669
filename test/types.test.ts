// The published declarations compile in a user's project that has no @types/node: the package's
// .d.ts files are emitted (as `npm run build:ts` does) into a scratch node_modules/candlewick with
// the real package.json, and test/types/*.ts, files written as a user would, are compiled against
// them with the repo's typescript, `types: []` (no @types/node) and `skipLibCheck: false` (so every
// .d.ts the package ships is checked, not only what the user calls). The README's TypeScript and
// JavaScript examples are compiled the same way, as written.

import { execFile } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

import test from "ava";

import { ROOT } from "./helpers/fixtures.js";
import { tempDir } from "./helpers/temp.js";

const run = promisify(execFile);
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
let project = "";

test.before(async () => {
  project = tempDir("candlewick-types-");
  const pkg = join(project, "node_modules/candlewick");
  mkdirSync(pkg, { recursive: true });
  copyFileSync(join(ROOT, "package.json"), join(pkg, "package.json"));
  await run(process.execPath, [TSC, "-p", join(ROOT, "tsconfig.json"), "--emitDeclarationOnly", "--declarationMap", "false", "--sourceMap", "false", "--outDir", join(pkg, "dist")]);
  cpSync(join(ROOT, "src/generated"), join(pkg, "dist/generated"), { recursive: true });
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "user-app", private: true, type: "module" }));
  cpSync(join(ROOT, "test/types"), join(project, "src"), { recursive: true });
});

/** Compile `files` (under test/types) in the scratch project; resolves with tsc's output, rejects on errors. */
async function compile(files: string[], compilerOptions: Record<string, unknown>): Promise<{ code: number; output: string }> {
  const config = {
    compilerOptions: { strict: true, noEmit: true, types: [], skipLibCheck: false, target: "ES2022", ...compilerOptions },
    files: files.map((f) => `src/${f}`),
  };
  const name = `tsconfig.${files.join("-")}.json`;
  writeFileSync(join(project, name), JSON.stringify(config));
  try {
    const { stdout } = await run(process.execPath, [TSC, "-p", join(project, name)], { cwd: project });
    return { code: 0, output: stdout };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

test("the .d.ts files compile without @types/node or the DOM library (NodeNext)", async (t) => {
  const { code, output } = await compile(["consumer.ts"], { module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022"] });
  t.is(code, 0, output);
});

test("the .d.ts files compile without @types/node, with the DOM library, for a bundler", async (t) => {
  const { code, output } = await compile(["consumer.ts", "with-dom.ts"], { module: "ESNext", moduleResolution: "Bundler", lib: ["ES2022", "DOM"] });
  t.is(code, 0, output);
});

test("they still compile with @types/node, whose AbortSignal fits too", async (t) => {
  const { code, output } = await compile(["with-dom.ts"], {
    module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022"], types: ["node"], typeRoots: [join(ROOT, "node_modules/@types")],
  });
  t.is(code, 0, output);
});

test("the README's TypeScript and JavaScript examples type-check as written", async (t) => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/^```(ts|js)\n([\s\S]*?)^```$/gm)].map((m) => m[2]!);
  t.true(blocks.length >= 4, `${blocks.length} examples found`);
  const files = blocks.map((code, i) => {
    // An example that continues an earlier one uses its `pipe`.
    const prelude = /\bconst pipe\b/.test(code) ? "" : 'import type { StableDiffusionPipeline } from "candlewick";\ndeclare const pipe: StableDiffusionPipeline;\n';
    const name = `readme-${i}.ts`;
    writeFileSync(join(project, "src", name), `${prelude}${code}\nexport {};\n`);
    return name;
  });
  const { code, output } = await compile(files, { module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022", "DOM"] });
  t.is(code, 0, output);
});

test("a type mistake in the user's code is still reported (the check is not vacuous)", async (t) => {
  writeFileSync(join(project, "src/mistake.ts"), `import { StableDiffusionPipeline } from "candlewick";\nexport const p: Promise<number> = StableDiffusionPipeline.fromPretrained("x");\n`);
  const { code, output } = await compile(["mistake.ts"], { module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022"] });
  t.not(code, 0);
  t.regex(output, /mistake\.ts.*TS2322/);
  t.notRegex(output, /node_modules\/candlewick/, "the package's own declarations have errors");
});
