import { connect, createServer, type Socket } from 'node:net';

/** PostgreSQL's CommandComplete for a COMMIT: 'C', its length (4 + "COMMIT\0"), the tag. */
const COMMIT_COMPLETE = Buffer.concat([Buffer.from([0x43, 0, 0, 0, 11]), Buffer.from('COMMIT\0')]);
/** What a store commit's statement holds (commit.ts writeAll): the cut waits for such a transaction. */
const STORE_COMMIT_MARK = Buffer.from('INSERT INTO store_changes');
/** The bytes of one chunk kept to find a mark split across two (longer than any mark). */
const MARK_TAIL = 128;
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
  /**
   * Whose COMMIT is cut: a transaction that sent this text. By default a store commit's (its
   * change-feed row); `UPDATE server_documents` cuts a signing-key rotation's.
   */
  mark?: string;
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
  let armed: (Required<Omit<CutOptions, 'mark'>> & { mark: Buffer }) | null = null;
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
      const refuseMs = armed?.refuseNewForMs ?? 0;
      refuseUntil = Date.now() + refuseMs;
      armed = null;
      cut++;
      upstream.destroy();
      client.destroy();
      // The database unreachable: the pool's other connections go too, so none can answer.
      if (refuseMs > 0) for (const socket of sockets) socket.destroy();
    };
    // Only the COMMIT of a store commit (one that wrote a change-feed row) is cut, not that of any
    // other transaction of the server (an audit write) that happens to come first.
    let storeCommit = false;
    let tail = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      const mark = armed?.mark ?? STORE_COMMIT_MARK;
      const seen = Buffer.concat([tail, chunk]);
      tail = seen.subarray(Math.max(0, seen.length - MARK_TAIL));
      if (seen.includes(mark)) storeCommit = true;
      if (chunk.includes(COMMIT_QUERY)) {
        tail = Buffer.alloc(0); // the next transaction's mark is its own
        if (armed?.when === 'before' && storeCommit) return cutHere();
        if (armed?.when !== 'after') storeCommit = false;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (chunk.includes(COMMIT_COMPLETE)) {
        if (armed?.when === 'after' && storeCommit) return cutHere();
        storeCommit = false;
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
    arm({ when = 'after', refuseNewForMs = 0, mark }: CutOptions = {}) {
      armed = { when, refuseNewForMs, mark: mark === undefined ? STORE_COMMIT_MARK : Buffer.from(mark) };
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
