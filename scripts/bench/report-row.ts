import { round } from './lib/stats.js';

/** The scenarios of the issue, in its order; every run reports each of them. */
export const SCENARIOS = [
  'sessions',
  'revoke',
  'mass-revoke',
  'enrollment',
  'reconnect-storm',
  'agent-footprint',
  'admin-reads',
  'audit-list',
  'renewal',
  'event-loop',
  'replicas',
] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** One JSON line: a metric for the project beside its baselines, and the ratio to the main one. */
export interface Row {
  type: 'row';
  scenario: Scenario;
  metric: string;
  n: number | null;
  unit: string;
  project: number | null;
  baselines: Record<string, number>;
  ratioTo: string | null;
  ratio: number | null;
}

export interface Target {
  type: 'target';
  id: string;
  scenario: Scenario;
  text: string;
  measured: string;
  met: boolean | null;
}

export const KB = 1024;
export const MB = 2 ** 20;

/** A row, its values rounded to `digits` and its ratio to the baseline named `ratioTo`. */
export function row(
  scenario: Scenario,
  metric: string,
  n: number | null,
  unit: string,
  project: number | null,
  baselines: Record<string, number | null | undefined>,
  ratioTo: string | null,
  digits = 2,
): Row {
  const clean: Record<string, number> = {};
  for (const [name, value] of Object.entries(baselines))
    if (value !== null && value !== undefined && Number.isFinite(value)) clean[name] = round(value, digits);
  const base = ratioTo ? clean[ratioTo] : undefined;
  const ratio = project !== null && base !== undefined && base !== 0 ? round(project / base, 2) : null;
  return {
    type: 'row',
    scenario,
    metric,
    n,
    unit,
    project: project === null ? null : round(project, digits),
    baselines: clean,
    ratioTo: base !== undefined ? ratioTo : null,
    ratio,
  };
}

export const fmt = (value: number | null | undefined, digits = 1) =>
  value === null || value === undefined || !Number.isFinite(value)
    ? 'n/a'
    : value.toLocaleString('en-US', { maximumFractionDigits: digits });
