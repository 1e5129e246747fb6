import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildServerProgram } from '../server/cli/program.js';
import { withOptionHint } from './cli-option-hints.js';

describe('withOptionHint', () => {
  const program = buildServerProgram({ json: false, env: {} });

  it('suggests the option a typed one begins, which commander misses', () => {
    expect(withOptionHint("error: unknown option '--admin-key'\n", program)).toBe(
      "error: unknown option '--admin-key'\n(Did you mean --admin-key-file?)\n",
    );
  });

  it("leaves commander's own suggestion, other errors and options nothing begins with alone", () => {
    const own = "error: unknown option '--admin-key-fil'\n(Did you mean --admin-key-file?)\n";
    expect(withOptionHint(own, program)).toBe(own);
    expect(withOptionHint("error: unknown command 'grups'\n", program)).toBe(
      "error: unknown command 'grups'\n",
    );
    expect(withOptionHint("error: unknown option '--zzz'\n", program)).toBe(
      "error: unknown option '--zzz'\n",
    );
    // Whole words only: --state does not begin --statement.
    const tree = new Command('t').option('--statement').option('--state-dir <d>');
    expect(withOptionHint("error: unknown option '--state'\n", tree)).toContain(
      '(Did you mean --state-dir?)',
    );
  });
});
