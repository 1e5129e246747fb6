import type { IncomingMessage, ServerResponse } from 'node:http';

/** What a baseline server can do to one of its sessions: send one last message, then close. */
export interface Closable {
  group: string;
  end(code: number, reason: string): void;
}

/** Close codes, the same the project uses (revoked one, deleted a group's). */
export const REVOKED_CODE = 4003;
export const DELETED_CODE = 4004;

/**
 * The baseline servers' HTTP control: `POST /close?id=` (the project's revoke), `POST
 * /close-group?group=` (its group delete), `GET /payload` (a fixed body, the floor for admin reads).
 */
export function controlHandler(sessions: Map<string, Closable>, payload: { body: string }) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const reply = (status: number, body: string) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(body);
    if (url.pathname === '/close') {
      const session = sessions.get(url.searchParams.get('id') ?? '');
      session?.end(REVOKED_CODE, 'CONNECTOR_REVOKED');
      return reply(200, JSON.stringify({ closed: session ? 1 : 0 }));
    }
    if (url.pathname === '/close-group') {
      const group = url.searchParams.get('group');
      let closed = 0;
      for (const session of [...sessions.values()]) {
        if (session.group !== group) continue;
        session.end(DELETED_CODE, 'CONNECTOR_NOT_FOUND');
        closed++;
      }
      return reply(200, JSON.stringify({ closed }));
    }
    if (url.pathname === '/payload') return reply(200, payload.body);
    reply(404, '{"error":"not found"}');
  };
}

export interface BaselineServer {
  url: string;
  port: number;
  sessions(): number;
  setPayload(body: string): void;
  close(): Promise<void>;
}
