import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A relay on another loopback port that pipes every byte to `target` untouched (the Host header
 * included). Its connections reach the target from `localAddress` when given (e.g. 127.0.0.2: a
 * second host), else from 127.0.0.1.
 */
export async function startRelay(
  target: string,
  options: { localAddress?: string } = {},
): Promise<{ url: string; readonly connections: number; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const inbounds = new Set<Socket>();
  const relay: Server = createServer((inbound) => {
    const outbound = connect({ port: Number(port), host: hostname, localAddress: options.localAddress });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    inbounds.add(inbound);
    inbound.on('close', () => inbounds.delete(inbound));
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const { port: relayPort } = relay.address() as { port: number };
  return {
    url: `http://127.0.0.1:${relayPort}`,
    /** Connections open through the relay now. */
    get connections() {
      return inbounds.size;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        relay.close(() => resolve());
      }),
  };
}
