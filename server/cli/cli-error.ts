/**
 * A failure the CLI explains and exits on; `exitCode` 2 is a usage error. `reason` is the API's
 * reason when the server gave one (printed in `--json` errors).
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly reason: string | null = null,
  ) {
    super(message);
  }
}
