// Bootstrap for worker_threads workers written in TypeScript: registers tsx in the worker (its
// loader hooks are per thread) and imports the module named by workerData.module.
import { workerData } from "node:worker_threads";

import { register } from "tsx/esm/api";

register();
await import(workerData.module);
