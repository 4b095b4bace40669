/**
 * Why a native build did not load, from the loader's error, in words a user can act on: a CUDA
 * library or the NVIDIA driver missing, a glibc or libstdc++ older than the build needs, a driver
 * too old for CUDA 13. Also used on device errors, which is where an old driver shows up when the
 * CUDA libraries are loaded lazily.
 */

/** A reason and the fixes for it. */
export interface LoadProblem {
  reason: string;
  fixes: string[];
}

/** The oldest NVIDIA driver for CUDA 13.0 on Linux. */
export const MIN_DRIVER = "580";

const CUDA_LIBRARIES = /^lib(cudart|cublas|cublasLt|curand|nvrtc|cudnn[\w]*|cufft|cusparse|nvJitLink)\.so/;

export const DRIVER_TOO_OLD = /CUDA_ERROR_INSUFFICIENT_DRIVER|driver version is insufficient|CUDA_ERROR_UNSUPPORTED_PTX_VERSION|undefined symbol: (cu[A-Z]\w*)/;

const CUDA_RUNTIME_FIX =
  "Install the CUDA 13 runtime libraries and cuDNN 9: the CUDA toolkit 13.x (then add /usr/local/cuda/lib64 to LD_LIBRARY_PATH), " +
  "or from PyPI: pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cuda-nvrtc nvidia-cudnn-cu13 and add their lib folders to LD_LIBRARY_PATH.";
const DRIVER_FIX = `Update the NVIDIA driver to ${MIN_DRIVER} or newer (CUDA 13.0); nvidia-smi shows the installed one.`;
const CPU_FIX = "Or uninstall candlewick-linux-x64-gnu-cuda to use the CPU build without this message.";

/** Explain a `require()` failure of a native build. */
export function explainLoadError(error: unknown, candidate: string): LoadProblem {
  const e = error as { code?: string; message?: string };
  const message = e.message ?? String(error);
  if (e.code === "MODULE_NOT_FOUND" && message.includes(candidate)) return { reason: "not installed", fixes: [] };
  const firstLine = message.split("\n")[0] ?? message;
  const library = /([\w.+-]+\.so[\d.]*): cannot open shared object file/.exec(message)?.[1];
  if (library === "libcuda.so.1") {
    return { reason: `the NVIDIA driver is not installed (${library} was not found)`, fixes: [`Install the NVIDIA driver ${MIN_DRIVER} or newer (CUDA 13.0).`, CPU_FIX] };
  }
  if (library && CUDA_LIBRARIES.test(library)) {
    return { reason: `the CUDA library ${library} is missing (not found on the library path)`, fixes: [CUDA_RUNTIME_FIX, CPU_FIX] };
  }
  const glibc = /GLIBC_([\d.]+)['`]? not found/.exec(message)?.[1];
  if (glibc) {
    const have = runtimeGlibc();
    return {
      reason: `it needs glibc ${glibc} or newer${have ? `, and this system has ${have}` : ""} (${firstLine})`,
      fixes: ["Use a Linux with glibc 2.36 or newer (Debian 12, Ubuntu 22.04 or later), or build from source: npm run build:native (needs Rust)."],
    };
  }
  const glibcxx = /(GLIBCXX_[\d.]+|CXXABI_[\d.]+)['`]? not found/.exec(message)?.[1];
  if (glibcxx) {
    return { reason: `it needs a newer libstdc++ (${glibcxx}) (${firstLine})`, fixes: ["Install a newer libstdc++ (GCC 12 or later), or build from source: npm run build:native."] };
  }
  if (DRIVER_TOO_OLD.test(message)) {
    return { reason: `the NVIDIA driver is too old for CUDA 13 (${firstLine})`, fixes: [DRIVER_FIX, CPU_FIX] };
  }
  if (library) return { reason: `the library ${library} is missing (not found on the library path)`, fixes: [`Install the system package that provides ${library}.`] };
  return { reason: firstLine, fixes: [] };
}

/** A device error's message with the fix appended when the cause is a driver too old for CUDA 13. */
export function withDriverHint(message: string): string {
  return DRIVER_TOO_OLD.test(message) && !message.includes(DRIVER_FIX) ? `${message}. ${DRIVER_FIX}` : message;
}

/** The running glibc's version ("2.36"), where the runtime can tell without extra permissions. */
function runtimeGlibc(): string | undefined {
  if ("Deno" in globalThis) return undefined; // Deno would ask for --allow-sys.
  try {
    const report = (process as { report?: { getReport?: () => unknown } }).report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
    return report?.header?.glibcVersionRuntime;
  } catch {
    return undefined;
  }
}
