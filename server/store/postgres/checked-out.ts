import type pg from 'pg';

/** A client taken from the pool for a few statements, and how to give it back. */
export interface CheckedOut {
  client: pg.PoolClient;
  /**
   * Returns the client, or ends it when its connection died meanwhile or `broken` says it must go
   * (a statement timed out on it and may still run: the pool must not reuse it).
   */
  release(broken?: Error): void;
}

/**
 * `pool.connect()` for code that runs several statements on one client (a transaction, a lock held
 * across statements). pg emits 'error' on a client whose connection dies while no statement runs on
 * it, and the pool listens only on idle clients: unheard, that error would end the process (a
 * replica's database restarted between two statements of a commit). Here it is kept: the next
 * statement fails with it anyway, and `release` ends the client instead of pooling it.
 */
export async function checkOut(pool: pg.Pool): Promise<CheckedOut> {
  const client = await pool.connect();
  let lost: Error | undefined;
  const onError = (error: Error) => {
    lost = error;
  };
  client.on('error', onError);
  return {
    client,
    release(broken?: Error) {
      client.removeListener('error', onError);
      client.release(lost ?? broken);
    },
  };
}
