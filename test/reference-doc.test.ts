import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRPCError } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EXIT } from '../agent/exit-codes.js';
import { buildAgentProgram } from '../agent/program.js';
import { STATUS_EXIT_CODES_HELP } from '../agent/status-command.js';
import { UNENROLL_EXIT_CODES_HELP } from '../agent/unenroll-command.js';
import { adminCommand, adminEnv } from '../server/cli/admin-common.js';
import { buildServerProgram } from '../server/cli/program.js';
import { SERVE_FLAGS } from '../server/config.js';
import { processMetrics } from '../server/http/process-metrics.js';
import { createMetrics } from '../server/metrics.js';
import { appRouter } from '../server/router.js';
import { adminProcedure, agentProcedure, endingAgentProcedure } from '../server/trpc.js';
import { AUDIT_EVENT_TYPES } from '../shared/audit-event-types.js';
import { ERROR_REASONS } from '../shared/errors.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { repoRoot } from './helpers/processes.js';

/**
 * docs/reference.md is compared with the code's own tables: a command, flag, procedure, reason,
 * close code, exit code or metric added, renamed or removed on either side alone fails here.
 */

const doc = readFileSync(join(repoRoot, 'docs/reference.md'), 'utf8');

interface Section {
  level: number;
  title: string;
  body: string;
}

/** The doc's sections: each heading with the text up to the next heading (of any level). */
function sectionsOf(markdown: string): Section[] {
  const sections: Section[] = [];
  let inFence = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) inFence = !inFence;
    const heading = inFence ? null : /^(#{1,6}) (.*)$/.exec(line);
    if (heading) sections.push({ level: heading[1]!.length, title: heading[2]!.trim(), body: '' });
    else if (sections.length > 0) sections[sections.length - 1]!.body += `${line}\n`;
  }
  return sections;
}

const sections = sectionsOf(doc);

/** The section titled `title` with every section under it (up to the next heading of its level or above). */
function part(title: string): string {
  const start = sections.findIndex((s) => s.title === title);
  expect(start, `docs/reference.md has a section "${title}"`).toBeGreaterThanOrEqual(0);
  const level = sections[start]!.level;
  const end = sections.findIndex((s, i) => i > start && s.level <= level);
  return sections
    .slice(start, end === -1 ? undefined : end)
    .map((s) => `${s.title}\n${s.body}`)
    .join('\n');
}

/** The cells of every table row in `text` (header and separator rows left out). */
function rows(text: string): string[][] {
  const lines = text.split('\n').filter((l) => l.startsWith('|'));
  return lines
    .filter((l, i) => !/^\|[\s|:-]+\|$/.test(l) && !/^\|[\s|:-]+\|$/.test(lines[i + 1] ?? ''))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

const code = (text: string) => `\`${text}\``;

/** Rows whose first cell is one backticked value matching `pattern`, by that value. */
function rowsKeyedBy(text: string, pattern: RegExp): Map<string, string[]> {
  const keyed = new Map<string, string[]>();
  for (const cells of rows(text)) {
    const key = /^`([^`]+)`$/.exec(cells[0] ?? '')?.[1];
    if (key && pattern.test(key)) {
      expect(keyed.has(key), `${key} is listed once`).toBe(false);
      keyed.set(key, cells);
    }
  }
  return keyed;
}

/** Builds the trees with the CLI's environment defaults unset, as a user without them sees --help. */
function withoutCliEnv<T>(build: () => T): T {
  const names = ['CONNECTOR_SERVER', 'CONNECTOR_DATA_DIR', 'CONNECTOR_CA_FILE'];
  const saved = names.map((n) => process.env[n]);
  for (const n of names) delete process.env[n];
  try {
    return build();
  } finally {
    names.forEach((n, i) => {
      if (saved[i] !== undefined) process.env[n] = saved[i];
    });
  }
}

const [serverProgram, agentProgram, commonOptions] = withoutCliEnv(
  () =>
    [
      buildServerProgram({ json: false }),
      buildAgentProgram(),
      adminCommand(new Command('probe'), 'probe', '', adminEnv(process.env)).options,
    ] as const,
);

/** Every command of a tree by its path (`connector-server groups create`). */
function commandsOf(program: Command): Map<string, Command> {
  const all = new Map<string, Command>();
  const visit = (command: Command, path: string) => {
    all.set(path, command);
    for (const sub of command.commands) visit(sub, `${path} ${sub.name()}`);
  };
  visit(program, program.name());
  return all;
}

const argumentsOf = (command: Command) =>
  command.registeredArguments.map((a) => {
    const name = `${a.name()}${a.variadic ? '...' : ''}`;
    return a.required ? `<${name}>` : `[${name}]`;
  });

/** The doc's command headings (`### \`connector-server groups get <group>\``) by command path. */
function documentedCommands(): Map<string, { args: string[]; body: string }> {
  const found = new Map<string, { args: string[]; body: string }>();
  for (const s of sections) {
    const usage = /^`(connector-(?:server|agent)(?: [^`]*)?)`/.exec(s.title)?.[1];
    if (!usage) continue;
    const words = usage.split(' ');
    const firstArg = words.findIndex((w) => /^[<[]/.test(w));
    const path = (firstArg === -1 ? words : words.slice(0, firstArg)).join(' ');
    expect(found.has(path), `${path} has one heading`).toBe(false);
    found.set(path, { args: firstArg === -1 ? [] : words.slice(firstArg), body: s.body });
  }
  return found;
}

const COMMON_MARKER = '[common admin options](#common-admin-options)';

describe('docs/reference.md against the command trees', () => {
  const documented = documentedCommands();

  for (const program of [serverProgram, agentProgram]) {
    it(`lists every command of ${program.name()} with its arguments and aliases, and no other`, () => {
      const commands = commandsOf(program);
      const docPaths = [...documented.keys()].filter((p) => p.split(' ')[0] === program.name());
      expect(docPaths.sort()).toEqual([...commands.keys()].sort());
      for (const [path, command] of commands) {
        expect(documented.get(path)?.args, `${path}: its arguments`).toEqual(argumentsOf(command));
        for (const alias of command.aliases())
          expect(documented.get(path)?.body, `${path}: its alias ${alias}`).toContain(`Alias ${code(alias)}`);
      }
    });

    it(`lists every option of every ${program.name()} command, with its default and choices, and no other`, () => {
      for (const [path, command] of commandsOf(program)) {
        const body = documented.get(path)?.body ?? '';
        const listed = rowsKeyedBy(body, /^-/);
        const inherited = body.includes(COMMON_MARKER) ? commonOptions.map((o) => o.flags) : [];
        expect([...listed.keys(), ...inherited].sort(), `${path}: its options`).toEqual(
          command.options.map((o) => o.flags).sort(),
        );
        for (const option of command.options) {
          const row = listed.get(option.flags)?.join(' | ');
          if (!row) continue; // a common option: checked against its own table below
          if (option.defaultValue !== undefined)
            expect(row, `${path} ${option.flags}: its default`).toMatch(
              new RegExp(
                `default \`?${String(option.defaultValue).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\`?`,
              ),
            );
          for (const choice of option.argChoices ?? [])
            expect(row, `${path} ${option.flags}: choice ${choice}`).toContain(code(choice));
          if (option.mandatory) expect(row, `${path} ${option.flags} is required`).toContain('required');
        }
      }
    });
  }

  it('lists the common admin options once, with their defaults', () => {
    const listed = rowsKeyedBy(part('Common admin options'), /^-/);
    expect([...listed.keys()].sort()).toEqual(commonOptions.map((o) => o.flags).sort());
    for (const option of commonOptions)
      if (option.defaultValue !== undefined)
        expect(listed.get(option.flags)?.join(' | ')).toContain(
          `default ${code(String(option.defaultValue))}`,
        );
  });

  it('gives every serve flag its env var and default from SERVE_FLAGS', () => {
    const listed = rowsKeyedBy(part('`connector-server serve`'), /^-/);
    // The one serve flag outside SERVE_FLAGS: it has no environment variable on purpose.
    expect(listed.get('--new-admin-key')?.[1]).toMatch(/^none\b/);
    listed.delete('--new-admin-key');
    expect([...listed.keys()].sort()).toEqual(
      Object.values(SERVE_FLAGS)
        .map((s) => s.flag)
        .sort(),
    );
    for (const spec of Object.values(SERVE_FLAGS)) {
      const [, env, fallback] = listed.get(spec.flag)!;
      expect(env, spec.flag).toBe(code(spec.env));
      // A default the parser applies is backticked; one a service applies (or none) is prose.
      if (spec.default) expect(fallback, spec.flag).toBe(code(spec.default));
      else expect(fallback, spec.flag).not.toContain('`');
    }
  });

  it('gives each agent command’s own exit codes as its --help does', () => {
    const codesOf = (help: string) => [...help.matchAll(/(?:^Exit codes: |· )(\d+) /gm)].map((m) => m[1]);
    const said = (path: string) =>
      /Exits ([\d, or]+)/.exec(documented.get(path)?.body ?? '')?.[1]?.match(/\d+/g) ?? [];
    expect(said('connector-agent status')).toEqual(codesOf(STATUS_EXIT_CODES_HELP));
    expect(said('connector-agent unenroll')).toEqual(codesOf(UNENROLL_EXIT_CODES_HELP));
  });
});

describe('docs/reference.md against the code’s tables', () => {
  it('lists every agent exit code of agent/exit-codes.ts by number and name, and no other', () => {
    const listed = rows(part('Exit codes of connector-agent')).filter((cells) =>
      /^\d+$/.test(cells[0] ?? ''),
    );
    expect(
      Object.fromEntries(listed.map(([number, name]) => [name?.replaceAll('`', ''), Number(number)])),
    ).toEqual(EXIT);
  });

  it('lists every close code of CLOSE_CODES by number and name, and no other', () => {
    const listed = new Map(
      rows(part('Websocket close codes')).map((cells) => [/^`([A-Z_]+)`$/.exec(cells[1] ?? '')?.[1], cells]),
    );
    listed.delete(undefined);
    expect(Object.fromEntries([...listed].map(([name, cells]) => [name, Number(cells[0])]))).toEqual(
      CLOSE_CODES,
    );
  });

  it('lists every error reason with its HTTP status, message and hint, and no other', () => {
    const listed = rowsKeyedBy(part('Error reasons'), /^[A-Z_]+$/);
    expect([...listed.keys()].sort()).toEqual(Object.keys(ERROR_REASONS).sort());
    for (const [reason, entry] of Object.entries(ERROR_REASONS)) {
      const [, status, message, hint] = listed.get(reason)!;
      expect(Number(status), reason).toBe(getHTTPStatusCodeFromError(new TRPCError({ code: entry.code })));
      expect(message, reason).toBe(entry.message);
      expect(hint, reason).toBe(entry.hint);
    }
  });

  it('names no error reason, close code or exit code the code does not have', () => {
    const known = new Set<string>([
      ...Object.keys(ERROR_REASONS),
      ...Object.keys(CLOSE_CODES),
      ...Object.keys(EXIT),
      ...Object.values(SERVE_FLAGS).map((s) => s.env),
      // The CLIs' own environment, the CLI's JSON reason for a usage error, and a close reason.
      'CONNECTOR_SERVER',
      'CONNECTOR_ADMIN_KEY',
      'CONNECTOR_CA_FILE',
      'CONNECTOR_STATE_DIR',
      'CONNECTOR_PROVISIONING_KEY',
      'USAGE',
      'SESSION_REPLACED',
      // The code's tables this doc names.
      'SERVE_FLAGS',
      'ERROR_REASONS',
      'CLOSE_CODES',
      'EXIT',
    ]);
    const named = [...doc.matchAll(/`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{4,})`/g)].map((m) => m[1]);
    expect(named.filter((n) => !known.has(n!))).toEqual([]);
  });

  it('lists every procedure of the router with its type, who may call it and its input fields', () => {
    const procedures = (appRouter._def as unknown as { procedures: Record<string, Procedure> }).procedures;
    const listed = rowsKeyedBy(part('tRPC API'), /^[a-z][A-Za-z]*\.[a-z][A-Za-z]*$/);
    expect([...listed.keys()].sort()).toEqual(Object.keys(procedures).sort());
    for (const [path, procedure] of Object.entries(procedures)) {
      const [, type, who, input] = listed.get(path)!;
      expect(type, path).toBe(procedure._def.type);
      expect(who, path).toBe(whoMayCall(procedure));
      expect(input, path).toBe(inputFields(procedure._def.inputs[0]));
    }
  });

  it('lists every metric of the server’s registry with its type, and every process metric', async () => {
    const own = await createMetrics().registry.getMetricsAsJSON();
    const metrics = part('Metrics');
    const listed = rowsKeyedBy(metrics, /^connector_/);
    expect(Object.fromEntries([...listed].map(([name, cells]) => [name, cells[1]]))).toEqual(
      Object.fromEntries(own.map((m) => [m.name, m.type])),
    );
    const processNames = (await processMetrics().getMetricsAsJSON()).map((m) => m.name);
    const namedProcess = [...metrics.matchAll(/`((?:process|nodejs)_[a-z0-9_]+)`/g)].map((m) => m[1]);
    expect([...new Set(namedProcess)].sort()).toEqual([...new Set(processNames)].sort());
  });

  it('lists every audit event type the server records, and no other', () => {
    const recorded = new Set<string>();
    const sourceFiles = (dir: string): string[] =>
      readdirSync(join(repoRoot, dir), { withFileTypes: true }).flatMap((e) =>
        e.isDirectory()
          ? sourceFiles(`${dir}/${e.name}`)
          : e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')
            ? [`${dir}/${e.name}`]
            : [],
      );
    // events.ts types the services' own events (`connector.status`, …), which are not audit records,
    // and remote-changes.ts makes those same events from other replicas' changes.
    const domainEventFiles = ['server/services/events.ts', 'server/services/remote-changes.ts'];
    for (const file of sourceFiles('server').filter((f) => !domainEventFiles.includes(f))) {
      // Audit records only: `audit…({ type: '…' })`, `audit('…')`; not the services' domain events
      // (`events.applied|committed|saved({ type: … })`).
      const text = readFileSync(join(repoRoot, file), 'utf8')
        .split('\n')
        .filter((l) => !/events\.(applied|committed|saved)\(/.test(l))
        .join('\n');
      for (const m of text.matchAll(
        /(?:type:\s*(?:[^,\n]*\?\s*)?|\baudit\(\s*)'([a-z_]+\.[a-z_]+)'(?:\s*:\s*'([a-z_]+\.[a-z_]+)')?/g,
      ))
        for (const type of [m[1], m[2]]) if (type) recorded.add(type);
    }
    const listed = rowsKeyedBy(part('Audit events'), /^[a-z_]+\.[a-z_]+$/);
    expect([...listed.keys()].sort()).toEqual([...recorded].sort());
    // The list `audit --type` is checked against, in the doc's order.
    expect([...AUDIT_EVENT_TYPES]).toEqual([...listed.keys()]);
  });
});

interface Procedure {
  _def: { type: string; middlewares: unknown[]; inputs: unknown[] };
}

const lastMiddleware = (procedure: unknown) => (procedure as Procedure)._def.middlewares.at(-1);

/** The doc's words for the base procedure a procedure is built on. */
function whoMayCall(procedure: Procedure): string {
  const has = (base: unknown) => procedure._def.middlewares.includes(lastMiddleware(base));
  // adminProcedure keeps mutations to the admin scope: queries and subscriptions take a read key too.
  if (has(adminProcedure)) return procedure._def.type === 'mutation' ? 'admin key' : 'admin or read key';
  if (has(agentProcedure)) return 'agent session';
  if (has(endingAgentProcedure)) return 'ending agent session';
  return 'anyone';
}

/** `{a, b?}` for an object input (`?`: the field may be left out), `—` for none. */
function inputFields(input: unknown): string {
  if (!input) return '—';
  let schema = input as z.ZodType;
  while (schema instanceof z.ZodOptional) schema = schema.unwrap() as z.ZodType;
  const shape = (schema as z.ZodObject).shape;
  const fields = Object.entries(shape).map(
    ([name, field]) => `${name}${(field as z.ZodType).safeParse(undefined).success ? '?' : ''}`,
  );
  return code(`{${fields.join(', ')}}`);
}
