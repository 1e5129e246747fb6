import { randomInt } from 'node:crypto';

/**
 * The order an agent tries its servers in: a random starting point, so a fleet given the same list
 * spreads over the replicas instead of all landing on the first, then round the list; `next` moves
 * on after a failed connect or a lost session.
 */
export class ServerRotation {
  private index: number;
  constructor(readonly servers: readonly string[]) {
    if (servers.length === 0) throw new Error('ServerRotation needs at least one server');
    this.index = randomInt(servers.length);
  }

  get current(): string {
    return this.servers[this.index] as string;
  }

  /** Moves to the next server and returns it (the same one when there is only one). */
  next(): string {
    this.index = (this.index + 1) % this.servers.length;
    return this.current;
  }
}

/** Whether every server of `wanted` is one the identity was issued for (so it may be presented there). */
export function allKnown(wanted: readonly string[], known: readonly string[]): boolean {
  return wanted.every((server) => known.includes(server));
}
