import { request } from 'node:http';
import { fetchVia } from '../../../agent/transport.js';

/**
 * A `fetch` for the agent's enrollment code that leaves from `localAddress` (127.0.0.x): undici's
 * global fetch cannot choose its source address. One fresh connection per request, as each real
 * agent is a different host.
 */
export function fetchFrom(localAddress: string): typeof fetch {
  return fetchVia(request, { localAddress, agent: false });
}
