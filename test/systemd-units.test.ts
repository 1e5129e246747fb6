import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/processes.js';

const UNITS = ['connector-server.service', 'connector-agent.service'] as const;
/** `systemd-analyze security` exposure, times ten (its --threshold scale): 2.5 is "OK" with a margin. */
const MAX_EXPOSURE_TIMES_TEN = 25;

const systemdAnalyze = onPath('systemd-analyze');
const withSystemd = systemdAnalyze ? it : it.skip;
const needs = systemdAnalyze ? '' : ' (skipped: systemd-analyze is not on PATH)';

function onPath(command: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return null;
}

function unitText(name: string): string {
  return readFileSync(join(repoRoot, 'scripts', name), 'utf8');
}

/** Values of `key=` lines in a unit (comments skipped), in order. */
function directive(text: string, key: string): string[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

/** Runs systemd-analyze; its warnings go to stderr with exit 0, so callers look at both. */
function analyze(args: string[]): { status: number | null; output: string } {
  const result = spawnSync(systemdAnalyze as string, args, { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

describe('the systemd units', () => {
  let dir: string;
  let standIn: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'units-'));
    standIn = join(dir, 'connector-agent');
    await writeFile(standIn, '#!/bin/sh\nexit 0\n');
    await chmod(standIn, 0o755);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * A copy of the unit whose ExecStart binary exists here (verify refuses a missing one): node for
   * /usr/bin/node (which may live elsewhere on this machine), a stand-in script for the agent binary.
   */
  async function staged(name: string, edit: (text: string) => string = (t) => t): Promise<string> {
    const text = unitText(name).replace(/^ExecStart=(\S+)/gm, (_line, binary: string) =>
      binary.endsWith('/node') ? `ExecStart=${process.execPath}` : `ExecStart=${standIn}`,
    );
    const file = join(dir, name);
    await writeFile(file, edit(text));
    return file;
  }

  for (const name of UNITS) {
    withSystemd(`${name}: systemd-analyze verify accepts it without a single warning${needs}`, async () => {
      const { status, output } = analyze(['verify', '--man=no', await staged(name)]);
      expect(output).toBe('');
      expect(status).toBe(0);
    });

    withSystemd(
      `${name}: hardening keeps its exposure at most 2.5 (systemd-analyze security)${needs}`,
      async () => {
        const { status, output } = analyze([
          'security',
          '--offline=yes',
          '--no-pager',
          `--threshold=${MAX_EXPOSURE_TIMES_TEN}`,
          await staged(name),
        ]);
        expect(status, output.split('\n').slice(-1)[0]).toBe(0);
      },
    );
  }

  // Without this, "no warning" could mean a systemd that does not check: a typo must show.
  withSystemd(
    `a misspelt directive or a bad value is reported, so a clean verify means something${needs}`,
    async () => {
      const typo = await staged('connector-server.service', (t) =>
        t.replace('\nNoNewPrivileges=yes', '\nNoNewPrivilege=yes'),
      );
      expect(analyze(['verify', '--man=no', typo]).output).toMatch(/Unknown key.*NoNewPrivilege\b/);
      const badValue = await staged('connector-agent.service', (t) =>
        t.replace('\nRestart=on-failure', '\nRestart=sometimes'),
      );
      expect(analyze(['verify', '--man=no', badValue]).output).toMatch(/sometimes/);
    },
  );

  it('the server unit runs serve from the installed copy on the dir systemd makes for it, unprivileged', () => {
    const text = unitText('connector-server.service');
    const [execStart] = directive(text, 'ExecStart');
    expect(execStart).toMatch(/^\/usr\/bin\/node --import tsx server\/main\.ts serve /);
    const [stateDirectory] = directive(text, 'StateDirectory');
    expect(execStart).toContain(`--data-dir /var/lib/${stateDirectory}`);
    expect(directive(text, 'WorkingDirectory')).toEqual(['/opt/connector-server']);
    expect(directive(text, 'User')).toEqual(['connector-server']);
    // tsx must be there after `npm ci --omit=dev`, or ExecStart cannot load the server.
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(pkg.dependencies.tsx).toBeDefined();
    // Exit 2 is the server's "fix the configuration" code (usage errors, a locked or foreign data dir).
    expect(directive(text, 'RestartPreventExitStatus')).toEqual(['2']);
    expect(directive(text, 'AmbientCapabilities')).toEqual(['']);
    expect(directive(text, 'CapabilityBoundingSet')).toEqual(['']);
  });

  it('neither unit sets MemoryDenyWriteExecute (Node’s JIT needs writable+executable memory)', () => {
    for (const name of UNITS) expect(directive(unitText(name), 'MemoryDenyWriteExecute')).toEqual([]);
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchorOf(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

function headings(markdown: string): string[] {
  return markdown
    .replace(/```[\s\S]*?```/g, '')
    .split('\n')
    .filter((line) => /^#{1,6} /.test(line))
    .map((line) => line.replace(/^#+ /, '').trim());
}

describe('the deployment docs the product points to', () => {
  const pointers = [
    'scripts/connector-server.service',
    'scripts/connector-agent.service',
    'scripts/build-agent.ts',
    'README.md',
    'SECURITY.md',
    'docs/deploy.md',
    'docs/reference.md',
    // PROCEDURE_NOT_FOUND's hint sends API users to docs/reference.md.
    'shared/errors.ts',
  ];

  it('every docs/*.md named exists, and every section of docs/deploy.md cited is one of its headings', () => {
    const deploy = headings(readFileSync(join(repoRoot, 'docs/deploy.md'), 'utf8'));
    let cited = 0;
    for (const file of pointers) {
      const text = readFileSync(join(repoRoot, file), 'utf8');
      for (const [, doc] of text.matchAll(/\b(docs\/[\w.-]+\.md)\b/g)) {
        expect(existsSync(join(repoRoot, doc as string)), `${file} names ${doc}`).toBe(true);
      }
      // `docs/deploy.md, "Deploy a connector"` and `docs/deploy.md#deploy-a-connector`.
      for (const [, section] of text.matchAll(/docs\/deploy\.md, "([^"]+)"/g)) {
        cited++;
        expect(deploy, `${file} cites "${section}"`).toContain(section);
      }
      for (const [, anchor] of text.matchAll(/docs\/deploy\.md#([\w-]+)/g)) {
        cited++;
        expect(deploy.map(anchorOf), `${file} links #${anchor}`).toContain(anchor);
      }
    }
    // Both unit headers cite a section: if this drops, the patterns above stopped matching.
    expect(cited).toBeGreaterThanOrEqual(3);
  });

  it('every relative link in docs/ and the README reaches a file, and its #anchor a heading there', () => {
    const docs = readdirSync(join(repoRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`);
    for (const file of ['README.md', 'SECURITY.md', ...docs]) {
      const text = readFileSync(join(repoRoot, file), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/i.test(target as string)) continue;
        const [path, anchor] = (target as string).split('#');
        const linked = path ? resolve(join(repoRoot, dirname(file)), path) : join(repoRoot, file);
        expect(existsSync(linked), `${file} links ${target}`).toBe(true);
        if (anchor && linked.endsWith('.md'))
          expect(headings(readFileSync(linked, 'utf8')).map(anchorOf), `${file} links ${target}`).toContain(
            anchor,
          );
      }
    }
  });

  it('the README and docs point nowhere outside the repository', () => {
    const docs = readdirSync(join(repoRoot, 'docs')).map((f) => `docs/${f}`);
    for (const file of ['README.md', 'SECURITY.md', ...docs]) {
      const text = readFileSync(join(repoRoot, file), 'utf8');
      expect(text, file).not.toMatch(/\.\.\/shared\/|CONTRACT\.md/);
    }
  });
});
