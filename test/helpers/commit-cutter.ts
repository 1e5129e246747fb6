import { connect, createServer, type Socket } from 'node:net';

/** PostgreSQL's CommandComplete for a COMMIT: 'C', its length (4 + "COMMIT\0"), the tag. */
const COMMIT_COMPLETE = Buffer.concat([Buffer.from([0x43, 0, 0, 0, 11]), Buffer.from('COMMIT\0')]);
/** A client's simple Query of COMMIT: 'Q', its length (4 + "COMMIT\0"), the text. */
const COMMIT_QUERY = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')]);

export interface CutOptions {
  /**
   * `after`: the next COMMIT PostgreSQL answers as done is not answered (the commit is in the
   * database). `before`: the next COMMIT a client sends never reaches PostgreSQL (its backend finds
   * the client gone and rolls back). Either way the connection drops.
   */
  when?: 'after' | 'before';
  /** After the cut, new connections are dropped at once for this long (the database unreachable). */
  refuseNewForMs?: number;
}

export interface CommitCutter {
  /** The database URL through the cutter. */
  url: string;
  /** Cuts the connection of the next COMMIT (see CutOptions; by default after PostgreSQL committed). */
  arm(options?: CutOptions): void;
  /** Connections dropped that way. */
  readonly cut: number;
  close(): Promise<void>;
}

/**
 * A TCP relay in front of PostgreSQL that, armed, drops the connection of a COMMIT: after the server
 * committed the transaction, before its "COMMIT" answer reaches the client (the commit is in the
 * database, and the client saw its connection end: a crash or a reset at the worst moment), or
 * before the COMMIT reaches the server.
 */
export async function startCommitCutter(databaseUrl: string): Promise<CommitCutter> {
  const target = new URL(databaseUrl);
  const sockets = new Set<Socket>();
  let armed: Required<CutOptions> | null = null;
  let refuseUntil = 0;
  let cut = 0;
  const server = createServer((client) => {
    if (Date.now() < refuseUntil) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: target.hostname, port: Number(target.port) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
    }
    const cutHere = () => {
      refuseUntil = Date.now() + (armed?.refuseNewForMs ?? 0);
      armed = null;
      cut++;
      upstream.destroy();
      client.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (armed?.when === 'before' && chunk.includes(COMMIT_QUERY)) return cutHere();
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (armed?.when === 'after' && chunk.includes(COMMIT_COMPLETE)) return cutHere();
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
    arm({ when = 'after', refuseNewForMs = 0 }: CutOptions = {}) {
      armed = { when, refuseNewForMs };
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
