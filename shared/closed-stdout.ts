/**
 * `connector-server groups list | head -1`: the reader leaves after the line it wanted, and the next
 * write fails with EPIPE, which Node raises as an unhandled 'error' event: a stack trace and exit 1
 * for a command that did what it was asked (a script would run a create again). With nobody left to
 * read, the command ends with the status it has so far.
 */
export function exitQuietlyWhenStdoutCloses(): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });
}
