import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import {
  type ReplicaDirectory,
  type ReplicaRecord,
  ReplicaService,
  SingleServerDirectory,
} from './replicas.js';

/** The replicas table as a list in memory, with the 15 s bound the PostgreSQL replicas use. */
class ListedReplicas implements ReplicaDirectory {
  readonly backend = 'postgres';
  readonly deadAfterMs = 15_000;
  constructor(
    readonly selfId: string,
    readonly records: ReplicaRecord[],
    private readonly clock: ManualClock,
  ) {}
  async listening(): Promise<void> {}
  now() {
    return this.clock.now();
  }
  liveCount() {
    return this.records.length;
  }
  async list(): Promise<ReplicaRecord[]> {
    return this.records;
  }
}

const record = (id: string, heartbeatAt: number, sessions: number): ReplicaRecord => ({
  id,
  url: `http://${id}.example:7420`,
  process: { host: id, pid: 100, version: '1.0.0' },
  startedAt: 0,
  heartbeatAt,
  sessions,
  problems: [],
});

describe('ReplicaService.list', () => {
  it('a heartbeat past the bound shows the replica dead; at the bound, and from a clock ahead, live', async () => {
    const clock = new ManualClock(100_000);
    const directory = new ListedReplicas(
      'b',
      [
        record('a', 100_000 - 15_000, 4),
        record('b', 100_000 - 2_000, 3),
        record('c', 100_000 - 15_001, 2),
        // A replica whose clock runs ahead of this one's: its heartbeat is not "in the future".
        record('d', 100_000 + 500, 1),
      ],
      clock,
    );
    const view = await new ReplicaService({ directory }).list();
    expect(view.sessions).toBe(10);
    expect(view.replicas.map((r) => [r.id, r.state, r.ready, r.heartbeatAgeMs, r.self])).toEqual([
      ['a', 'live', true, 15_000, false],
      ['b', 'live', true, 2_000, true],
      ['c', 'dead', false, 15_001, false],
      ['d', 'live', true, 0, false],
    ]);
    expect(view.replicas[1]).toMatchObject({
      host: 'b',
      pid: 100,
      version: '1.0.0',
      startedAt: '1970-01-01T00:00:00.000Z',
      heartbeatAt: new Date(98_000).toISOString(),
    });
  });

  it('a replica that recorded no process (an older version) is listed with nulls; one with problems is not ready', async () => {
    const clock = new ManualClock(50_000);
    const old = { ...record('old', 49_000, 0), process: null, url: null, problems: null };
    const behind = {
      ...record('behind', 49_000, 5),
      problems: ['the change feed last read the database 4 s ago'],
    };
    const view = await new ReplicaService({
      directory: new ListedReplicas('x', [old, behind], clock),
    }).list();
    expect(view.replicas[0]).toMatchObject({
      host: null,
      pid: null,
      version: null,
      url: null,
      state: 'live',
      ready: null,
      problems: [],
    });
    expect(view.replicas[1]).toMatchObject({
      state: 'live',
      ready: false,
      problems: ['the change feed last read the database 4 s ago'],
    });
  });

  it('one server alone: its own URL once listening, its live session count, never dead', async () => {
    const clock = new ManualClock(1_000);
    let sessions = 0;
    const directory = new SingleServerDirectory({ clock, sessions: () => sessions });
    const service = new ReplicaService({ directory });
    expect((await service.list()).replicas[0]!.url).toBeNull();
    await directory.listening('http://127.0.0.1:7420');
    sessions = 7;
    clock.advance(86_400_000);
    const view = await service.list();
    expect(view).toMatchObject({ backend: 'embedded', deadAfterMs: null, sessions: 7 });
    expect(view.replicas[0]).toMatchObject({
      id: directory.selfId,
      self: true,
      url: 'http://127.0.0.1:7420',
      pid: process.pid,
      startedAt: new Date(1_000).toISOString(),
      heartbeatAt: null,
      state: 'live',
      sessions: 7,
    });
  });
});
