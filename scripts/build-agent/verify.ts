/**
 * Step 5: the binary is checked before it replaces anything. Every binary: its header (format and CPU),
 * the flipped SEA fuse and the blob byte for byte. A host binary must also run `version` with no node
 * on PATH, from an empty folder.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkHeader } from './binary-formats.js';
import { MACHO_SEGMENT, SEA_FUSE, type TargetSpec } from './targets.js';
import { BuildAgentError, display, mib } from './tools.js';

/** Verifies header, CPU, fuse and blob; returns what was verified. Throws BuildAgentError otherwise. */
export function inspectBinary(file: string, spec: TargetSpec, blob: Buffer): string[] {
  const buf = fs.readFileSync(file);
  const fail = (what: string): never => {
    throw new BuildAgentError(`${display(file)}: ${what}`);
  };
  const checks = [checkHeader(buf, { format: spec.format, arch: spec.arch, segment: MACHO_SEGMENT }, fail)];
  const flipped = countOccurrences(buf, Buffer.from(`${SEA_FUSE}:1`));
  const unflipped = countOccurrences(buf, Buffer.from(`${SEA_FUSE}:0`));
  if (flipped !== 1 || unflipped !== 0) {
    fail(`SEA fuse: found ${flipped}× ':1' and ${unflipped}× ':0', expected exactly one ':1'`);
  }
  checks.push(`SEA fuse flipped to ':1'`);
  if (buf.indexOf(blob) < 0) fail(`the ${mib(blob.length)} SEA blob is not in the binary`);
  checks.push(`SEA blob (${mib(blob.length)}) present, byte for byte`);
  return checks;
}

function countOccurrences(haystack: Buffer, needle: Buffer): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + 1)) count++;
  return count;
}

/** Runs `<binary> version` from an empty temp folder with no node reachable. */
export function runVersion(binaryPath: string): { output: string; ms: number; cwd: string } {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'connector-agent-check-'));
  try {
    const t0 = performance.now();
    const result = spawnSync(binaryPath, ['version'], {
      cwd,
      env: { PATH: '/nonexistent' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    const ms = performance.now() - t0;
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
    if (result.error || result.status !== 0) {
      const why = result.error
        ? result.error.message
        : result.signal
          ? `killed by ${result.signal}`
          : `exit code ${result.status}`;
      throw new BuildAgentError(
        `'${path.basename(binaryPath)} version' failed (${why})${output ? `:\n${output}` : ' with no output'}`,
      );
    }
    if (!output) throw new BuildAgentError(`'${path.basename(binaryPath)} version' printed nothing`);
    return { output, ms, cwd };
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}
