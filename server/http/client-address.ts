import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { plainAddress } from '../services/addresses.js';

/** The address a request is counted, limited and audited under. */
export type ClientAddressOf = (req: IncomingMessage) => string;

/**
 * Checks `--trusted-proxies` (comma-separated addresses and CIDRs: `10.0.0.0/8`, `127.0.0.1`,
 * `fd00::/8`) and returns its entries; an empty text is none. Throws the flag's message.
 */
export function parseTrustedProxies(text: string): string[] {
  if (text.trim() === '') return [];
  return text.split(',').map((raw) => {
    const entry = raw.trim();
    const [address = '', prefix, extra] = entry.split('/');
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits);
    if (family === 0 || !prefixOk || extra !== undefined)
      throw new Error(
        `"${entry}" is not an address or CIDR: give addresses or networks separated by commas, e.g. 127.0.0.1,10.0.0.0/8,fd00::/8`,
      );
    return entry;
  });
}

/**
 * How the server tells a request's client address. Without trusted proxies it is the TCP peer.
 * When the peer is a trusted proxy, it is taken from `X-Forwarded-For`: the rightmost address there
 * that is not itself a trusted proxy, since each proxy appends the address it got the request
 * from and only what trusted proxies appended can be believed (a client writes what it likes to
 * the left). A header that is missing, or runs into something that is not an address, leaves the
 * nearest trusted proxy's view: the last address believed.
 */
export function clientAddressResolver(trustedProxies: readonly string[]): ClientAddressOf {
  const peerOf = (req: IncomingMessage) => plainAddress(req.socket.remoteAddress ?? 'unknown');
  if (trustedProxies.length === 0) return peerOf;
  const trusted = new BlockList();
  for (const entry of trustedProxies) {
    const [address = '', prefix] = entry.split('/');
    const family = isIP(address) === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) trusted.addAddress(address, family);
    else trusted.addSubnet(address, Number(prefix), family);
  }
  const isTrusted = (address: string) => trusted.check(address, isIP(address) === 4 ? 'ipv4' : 'ipv6');
  return (req) => {
    let believed = peerOf(req);
    if (isIP(believed) === 0 || !isTrusted(believed)) return believed;
    const header = req.headers['x-forwarded-for'];
    if (!header) return believed;
    const hops = (Array.isArray(header) ? header.join(',') : header).split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = plainAddress((hops[i] as string).trim());
      if (isIP(hop) === 0) return believed;
      believed = hop;
      if (!isTrusted(hop)) return hop;
    }
    return believed;
  };
}
