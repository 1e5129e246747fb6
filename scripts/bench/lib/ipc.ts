import type { ChildProcess } from 'node:child_process';

/** A request from the harness to one of its child processes. */
interface IpcRequest {
  kind: 'req';
  id: number;
  cmd: string;
  args: unknown;
}

interface IpcResponse {
  kind: 'res';
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

interface IpcEvent {
  kind: 'event';
  name: string;
  data: unknown;
}

type IpcMessage = IpcRequest | IpcResponse | IpcEvent;

// biome-ignore lint/suspicious/noExplicitAny: each command names its own argument type
export type Handlers = Record<string, (args: any) => unknown>;

/**
 * Child side: answers the harness's requests with `handlers`. The child exits when the harness goes
 * away (its IPC channel closes), so a killed harness leaves nothing running.
 */
export function serveIpc(handlers: Handlers): { emit(name: string, data: unknown): void } {
  const send = process.send?.bind(process);
  if (!send) throw new TypeError('this script must be forked by the bench harness (it needs an IPC channel)');
  process.on('message', (message: IpcMessage) => {
    if (message?.kind !== 'req') return;
    const handler = handlers[message.cmd];
    Promise.resolve()
      .then(() => {
        if (!handler) throw new TypeError(`unknown command ${message.cmd}`);
        return handler(message.args);
      })
      .then(
        (result) => send({ kind: 'res', id: message.id, ok: true, result } satisfies IpcResponse),
        (error: unknown) =>
          send({
            kind: 'res',
            id: message.id,
            ok: false,
            error: (error as Error)?.stack ?? String(error),
          } satisfies IpcResponse),
      );
  });
  process.on('disconnect', () => process.exit(0));
  return { emit: (name, data) => send({ kind: 'event', name, data } satisfies IpcEvent) };
}

/** Harness side of one child: calls with a time bound, and events the child emits. */
export class Peer {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  private readonly listeners = new Map<string, Set<(data: unknown) => void>>();

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    child.on('message', (message: IpcMessage) => {
      if (message?.kind === 'res') {
        const waiter = this.waiting.get(message.id);
        if (!waiter) return;
        this.waiting.delete(message.id);
        clearTimeout(waiter.timer);
        if (message.ok) waiter.resolve(message.result);
        else waiter.reject(new Error(`${name}: ${message.error}`));
      } else if (message?.kind === 'event') {
        for (const listener of this.listeners.get(message.name) ?? []) listener(message.data);
      }
    });
    child.on('exit', (code, signal) => {
      for (const [id, waiter] of this.waiting) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`${name} exited (code ${code}, signal ${signal}) during a call`));
        this.waiting.delete(id);
      }
    });
  }

  call<T>(cmd: string, args: unknown = {}, timeoutMs = 60_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.name}: ${cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      if (!this.child.connected) {
        this.waiting.delete(id);
        clearTimeout(timer);
        reject(new Error(`${this.name} is not running`));
        return;
      }
      this.child.send({ kind: 'req', id, cmd, args } satisfies IpcRequest);
    });
  }

  on(name: string, listener: (data: unknown) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Resolves with the data of the next `name` event (bounded by `timeoutMs`). */
  once<T>(name: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${this.name}: no ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on(name, (data) => {
        clearTimeout(timer);
        off();
        resolve(data as T);
      });
      this.child.once('exit', (code, signal) => {
        clearTimeout(timer);
        off();
        reject(new Error(`${this.name} exited (code ${code}, signal ${signal}) before ${name}`));
      });
    });
  }
}
