import { connect, createServer, type Server, type Socket } from 'node:net';

export interface Relay {
  url: string;
  port: number;
  /** Connections open through the relay now. */
  readonly connections: number;
  /**
   * A network partition: from now on nothing passes either way and nothing is refused or reset (a
   * peer's writes are taken and dropped, its reads wait); new connections are taken and left hanging.
   */
  partition(): void;
  /** Ends the partition as a network's end does for what it held up (reset), and relays again. */
  heal(): void;
  close(): Promise<void>;
}

/**
 * A relay on another loopback port that pipes every byte to `target` untouched (the Host header
 * included). Its connections reach the target from `localAddress` when given (e.g. 127.0.0.2: a
 * second host), else from 127.0.0.1.
 */
export async function startRelay(target: string, options: { localAddress?: string } = {}): Promise<Relay> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const inbounds = new Set<Socket>();
  /** Sockets caught in the partition: reset when it ends. */
  const heldUp = new Set<Socket>();
  let partitioned = false;
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => {
      sockets.delete(s);
      heldUp.delete(s);
    });
    s.on('error', () => s.destroy());
  };
  const holdUp = (s: Socket) => {
    s.unpipe();
    // Read and dropped: the peer's writes succeed, as they do until TCP gives up on a lost network.
    s.removeAllListeners('data');
    s.on('data', () => {});
    heldUp.add(s);
  };
  const relay: Server = createServer((inbound) => {
    track(inbound);
    inbounds.add(inbound);
    inbound.on('close', () => inbounds.delete(inbound));
    if (partitioned) return holdUp(inbound);
    const outbound = connect({ port: Number(port), host: hostname, localAddress: options.localAddress });
    track(outbound);
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const { port: relayPort } = relay.address() as { port: number };
  return {
    url: `http://127.0.0.1:${relayPort}`,
    port: relayPort,
    get connections() {
      return inbounds.size;
    },
    partition() {
      partitioned = true;
      for (const s of sockets) holdUp(s);
    },
    heal() {
      partitioned = false;
      for (const s of heldUp) s.resetAndDestroy();
      heldUp.clear();
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        relay.close(() => resolve());
      }),
  };
}
