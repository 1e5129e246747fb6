import { isIP } from 'node:net';

/** A peer's address as the server records it: an IPv4 client of a dual-stack socket without `::ffff:`. */
export function plainAddress(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && isIP(address.slice(7)) === 4
    ? address.slice(7)
    : address;
}

/**
 * What a per-address limit counts `address` as: an IPv6 address as its /64 (`2001:db8:0:1::/64`),
 * the network one host or site is given, so that a client cannot step past a limit by taking the
 * next of its 2^64 addresses; an IPv4 address (or an IPv6 one that carries an IPv4 address in its
 * last 32 bits, as NAT64 gives) as itself. Audit records and logs keep the address.
 */
export function limitedAs(address: string): string {
  const plain = plainAddress(address).split('%')[0]!;
  if (isIP(plain) !== 6 || plain.includes('.')) return plain;
  const [head = '', tail] = plain.toLowerCase().split('::');
  const front = head === '' ? [] : head.split(':');
  const back = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? front : [...front, ...Array(8 - front.length - back.length).fill('0'), ...back];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
