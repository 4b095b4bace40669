/** A mistake in the command line: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  /** The command whose --help to point at ("generate"), or "" for the top level. */
  readonly command: string;

  constructor(message: string, command = "") {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}
