import { connect, createServer, type Socket } from 'node:net';

/** PostgreSQL's CommandComplete for a COMMIT: 'C', its length (4 + "COMMIT\0"), the tag. */
const COMMIT_COMPLETE = Buffer.concat([Buffer.from([0x43, 0, 0, 0, 11]), Buffer.from('COMMIT\0')]);

export interface CommitCutter {
  /** The database URL through the cutter. */
  url: string;
  /** The next COMMIT PostgreSQL answers as done is not answered: the connection drops instead. */
  arm(): void;
  /** Connections dropped that way. */
  readonly cut: number;
  close(): Promise<void>;
}

/**
 * A TCP relay in front of PostgreSQL that, armed, drops the connection on which the server has just
 * committed a transaction, before its "COMMIT" answer reaches the client: the commit is in the
 * database, and the client saw its connection end (a crash or a reset at the worst moment).
 */
export async function startCommitCutter(databaseUrl: string): Promise<CommitCutter> {
  const target = new URL(databaseUrl);
  const sockets = new Set<Socket>();
  let armed = false;
  let cut = 0;
  const server = createServer((client) => {
    const upstream = connect({ host: target.hostname, port: Number(target.port) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (armed && chunk.includes(COMMIT_COMPLETE)) {
        armed = false;
        cut++;
        upstream.destroy();
        client.destroy();
        return;
      }
      client.write(chunk);
    });
    upstream.on('end', () => client.end());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as { port: number }).port);
  return {
    url: url.toString(),
    arm() {
      armed = true;
    },
    get cut() {
      return cut;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
