/**
 * Every exit code of connector-agent, one table for all its commands, so that a number means one
 * thing whichever command a script ran.
 */
export const EXIT = {
  /** The run command: stopped by SIGINT/SIGTERM/SIGHUP. Other commands: done. */
  STOPPED: 0,
  FAILED: 1,
  /** Usage or configuration: a bad flag, an unreadable file, a TLS misconfiguration. */
  USAGE: 2,
  REFUSED: 3,
  REVOKED: 4,
  IDENTITY_GONE: 5,
  /** Another process with this identity replaced this session: a clone, which restarting cannot fix. */
  IDENTITY_IN_USE: 6,
  /** `status`: enrolled and the agent runs, but it is not connected (connecting or retrying). */
  NOT_CONNECTED: 7,
  /** `status`: enrolled, but no agent process runs with this state dir. */
  NOT_RUNNING: 8,
  /** `status`: this state dir holds no identity. */
  NOT_ENROLLED: 9,
  /** `unenroll`: the server could not be reached; nothing was changed (see --force). */
  SERVER_UNREACHABLE: 10,
} as const;
