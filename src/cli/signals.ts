/** SIGINT and SIGTERM for the long-running commands (serve, worker): the first stops gracefully, a second at once. */

/** Resolves at the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

/**
 * After the first signal: a second one ends the process at once (exit code 130), say when Redis is
 * gone and a graceful stop would wait for it.
 */
export function onSecondSignal(say: () => void): void {
  const now = () => {
    say();
    process.exit(130);
  };
  process.once("SIGINT", now);
  process.once("SIGTERM", now);
}
