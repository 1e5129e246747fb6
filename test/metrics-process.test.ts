import { execFile, execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseServeConfig } from '../server/config.js';
import { openFileLimit } from '../server/http/process-metrics.js';
import { startTestServer } from './helpers/server.js';

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

/**
 * The exposition format's rules that a scraper relies on (promtool checks these and more): every
 * family has one HELP and one TYPE before its samples, names and label sets are well formed, values
 * are numbers, and no sample line repeats.
 */
function expositionProblems(text: string): string[] {
  const problems: string[] = [];
  const help = new Set<string>();
  const type = new Map<string, string>();
  const samples = new Set<string>();
  // Values as Prometheus parses them (Go's ParseFloat: NaN and Inf in any case). prom-client writes
  // the event-loop lag's mean and deviation as `Nan` until its monitor has a first sample.
  const sample =
    /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.eE+-]+|[Nn][Aa][Nn]|[+-][Ii][Nn][Ff])$/;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      const [, kind, name = ''] = meta;
      const seen = kind === 'HELP' ? help : type;
      if (seen.has(name)) problems.push(`second ${kind} for ${name}`);
      if (kind === 'HELP') help.add(name);
      else type.set(name, meta[3] ?? '');
      continue;
    }
    const match = sample.exec(line);
    if (!match) {
      problems.push(`malformed line: ${line}`);
      continue;
    }
    const family = (match[1] ?? '').replace(/_(bucket|sum|count|total|created)$/, '');
    if (!type.has(match[1] ?? '') && !type.has(family)) problems.push(`sample before its TYPE: ${line}`);
    if (samples.has(`${match[1]}${match[2] ?? ''}`)) problems.push(`repeated sample: ${line}`);
    samples.add(`${match[1]}${match[2] ?? ''}`);
  }
  return problems;
}

function promtoolAvailable(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('/metrics: the process itself', () => {
  it('exports CPU, memory, heap, event-loop lag, GC and open file descriptors against their limit, in valid exposition format', async () => {
    await using srv = await startTestServer();
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_p99_seconds',
      'process_start_time_seconds',
    ])
      expect(metric(text, name), name).toBeGreaterThanOrEqual(0);
    expect(text).toContain('# TYPE nodejs_gc_duration_seconds histogram');
    expect(metric(text, 'connector_sessions_live')).toBe(0);

    const limit = await openFileLimit();
    expect(limit).toBeGreaterThan(0);
    expect(metric(text, 'process_max_fds')).toBe(limit);
    const open = metric(text, 'process_open_fds');
    const actual = readdirSync('/proc/self/fd').length - 1;
    expect(Math.abs(open - actual)).toBeLessThanOrEqual(8);

    expect(expositionProblems(text)).toEqual([]);
  });

  it.runIf(promtoolAvailable())('passes promtool check metrics', async () => {
    await using srv = await startTestServer();
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    const child = promisify(execFile)('promtool', ['check', 'metrics']);
    child.child.stdin?.end(text);
    await expect(child).resolves.toBeDefined();
  });

  it('lets several servers in one process each export the process metrics, and closing them leaves no handle behind', async () => {
    const before = process.getActiveResourcesInfo().length;
    for (let i = 0; i < 3; i++) {
      await using srv = await startTestServer();
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    }
    // Sockets and timers of the closed servers may take a turn to go.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(process.getActiveResourcesInfo().length).toBeLessThanOrEqual(before);
  });
});

describe('--metrics-listen', () => {
  it('serves /metrics and /healthz on its own address, and the main listener no longer serves /metrics', async () => {
    await using srv = await startTestServer({ config: { metricsListen: { host: '127.0.0.1', port: 0 } } });
    const metricsUrl = srv.server.metricsUrl!;
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(new URL(metricsUrl).port).not.toBe(String(srv.server.port));

    const scraped = await fetch(metricsUrl);
    expect(scraped.status).toBe(200);
    const text = await scraped.text();
    expect(metric(text, 'connector_sessions_live')).toBe(0);
    expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect((await fetch(new URL('/healthz', metricsUrl))).status).toBe(200);
    // The metrics listener is not an API: no tRPC, no JWKS.
    expect((await fetch(new URL('/trpc/groups.list', metricsUrl))).status).toBe(404);
    expect((await fetch(new URL('/.well-known/jwks.json', metricsUrl))).status).toBe(404);

    expect((await fetch(`${srv.url}/metrics`)).status).toBe(404);
    expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
    expect(await srv.admin.groups.list.query({})).toEqual([]);
  });

  it('is parsed from the flag or CONNECTOR_METRICS_LISTEN; a malformed address is refused with the form to use', () => {
    expect(parseServeConfig({ metricsListen: '0.0.0.0:9464' }, {}).metricsListen).toEqual({
      host: '0.0.0.0',
      port: 9464,
    });
    expect(parseServeConfig({}, { CONNECTOR_METRICS_LISTEN: '[::1]:9464' }).metricsListen).toEqual({
      host: '::1',
      port: 9464,
    });
    expect(parseServeConfig({}, {}).metricsListen).toBeNull();
    for (const bad of ['9464', 'localhost', 'host:99999', ':9464'])
      expect(() => parseServeConfig({ metricsListen: bad }, {}), bad).toThrow(
        /--metrics-listen: .*use HOST:PORT/,
      );
    // On the server's own port (another address): refused here, not blamed on --port at listen.
    expect(() => parseServeConfig({ metricsListen: '0.0.0.0:7420' }, {})).toThrow(
      "--metrics-listen: port 7420 is the server's own (--port): give the metrics listener another port",
    );
    expect(() => parseServeConfig({ port: '8080' }, { CONNECTOR_METRICS_LISTEN: '127.0.0.2:8080' })).toThrow(
      /^CONNECTOR_METRICS_LISTEN: port 8080 is the server's own \(--port\)/,
    );
  });
});
