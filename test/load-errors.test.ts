// The loader's explanations (src/load-errors.ts) for the messages that dlopen and the CUDA driver
// give: each names the cause and lists the fixes. The messages are glibc's and CUDA's own wording;
// a real dlopen of a build that needs a missing libcudart.so.13 is in test/install.test.ts.

import test from "ava";

import { explainLoadError, withDriverHint } from "../src/load-errors.js";

const CANDIDATE = "candlewick-linux-x64-gnu-cuda";
const dlopen = (message: string) => Object.assign(new Error(message), { code: "ERR_DLOPEN_FAILED" });

test("a package that is not installed", (t) => {
  const error = Object.assign(new Error(`Cannot find module '${CANDIDATE}'\nRequire stack:\n- /app/x.js`), { code: "MODULE_NOT_FOUND" });
  t.deepEqual(explainLoadError(error, CANDIDATE), { reason: "not installed", fixes: [] });
});

test("a missing CUDA library names it and how to install the CUDA 13 runtime", (t) => {
  const why = explainLoadError(dlopen("libcublasLt.so.13: cannot open shared object file: No such file or directory"), CANDIDATE);
  t.is(why.reason, "the CUDA library libcublasLt.so.13 is missing (not found on the library path)");
  t.regex(why.fixes[0]!, /CUDA 13 runtime libraries and cuDNN 9.*LD_LIBRARY_PATH/);
  t.regex(why.fixes[1]!, /uninstall candlewick-linux-x64-gnu-cuda/);
  t.regex(explainLoadError(dlopen("libcudnn.so.9: cannot open shared object file: No such file or directory"), CANDIDATE).reason, /CUDA library libcudnn\.so\.9/);
});

test("no NVIDIA driver", (t) => {
  const why = explainLoadError(dlopen("libcuda.so.1: cannot open shared object file: No such file or directory"), CANDIDATE);
  t.is(why.reason, "the NVIDIA driver is not installed (libcuda.so.1 was not found)");
  t.regex(why.fixes[0]!, /Install the NVIDIA driver 580 or newer/);
});

test("a glibc older than the build needs", (t) => {
  const message = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /app/node_modules/candlewick-linux-x64-gnu/candlewick.linux-x64-gnu.node)";
  const why = explainLoadError(dlopen(message), "candlewick-linux-x64-gnu");
  t.regex(why.reason, /^it needs glibc 2\.38 or newer(, and this system has [\d.]+)? \(\/lib\/x86_64-linux-gnu\/libc\.so\.6: version `GLIBC_2\.38' not found/);
  t.regex(why.fixes[0]!, /glibc 2\.36 or newer.*npm run build:native/);
  const cxx = explainLoadError(dlopen("/usr/lib/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by x.node)"), "x");
  t.regex(cxx.reason, /^it needs a newer libstdc\+\+ \(GLIBCXX_3\.4\.30\)/);
});

test("a driver too old for CUDA 13, at load or at device creation", (t) => {
  const why = explainLoadError(dlopen("/app/candlewick.linux-x64-gnu-cuda.node: undefined symbol: cuCtxCreate_v4"), CANDIDATE);
  t.regex(why.reason, /^the NVIDIA driver is too old for CUDA 13/);
  t.regex(why.fixes[0]!, /Update the NVIDIA driver to 580 or newer/);
  const device = 'device "cuda" was requested but no usable CUDA GPU was found (DriverError(CUDA_ERROR_INSUFFICIENT_DRIVER, "CUDA driver version is insufficient for CUDA runtime version"))';
  t.is(withDriverHint(device), `${device}. Update the NVIDIA driver to 580 or newer (CUDA 13.0); nvidia-smi shows the installed one.`);
  t.is(withDriverHint('device "cuda" was requested but no usable CUDA GPU was found (no device)'), 'device "cuda" was requested but no usable CUDA GPU was found (no device)');
});

test("anything else keeps its first line", (t) => {
  t.deepEqual(explainLoadError(dlopen("invalid ELF header\nmore"), CANDIDATE), { reason: "invalid ELF header", fixes: [] });
});
