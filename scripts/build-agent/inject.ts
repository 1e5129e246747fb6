/**
 * Steps 3 and 4: copy a node binary for the target (stripped, or with its Windows signature removed,
 * BEFORE injecting), then postject injects the SEA blob into the copy and flips the sentinel fuse.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { removeAuthenticode } from './binary-formats.js';
import { ensureNodeBinary } from './node-binary.js';
import { MACHO_SEGMENT, SEA_FUSE, SEA_RESOURCE, type TargetSpec } from './targets.js';
import { display, fileSize, mib, runChecked, type StepIo, which } from './tools.js';

const localRequire = createRequire(import.meta.url);

/** Where the binary is made, from which node, and what it is for. */
export interface BaseBinaryPlan {
  binaryPath: string;
  spec: TargetSpec;
  cross: boolean;
  /** linux-x64 built on this host: the only binary the build strips. */
  strippable: boolean;
  nodeVersion: string;
  cacheDir: string;
}

export interface BaseBinary {
  /** The node binary copied (this node, or the cached npm one). */
  baseNodePath: string;
  /** process.execPath, or the npm package spec the node binary came from. */
  nodeSource: string;
  stripped: boolean;
  notes: string[];
}

/** Copies the node binary to `plan.binaryPath`, strips it if asked and possible, drops a PE signature. */
export async function copyBaseBinary(
  plan: BaseBinaryPlan,
  wantStrip: boolean,
  io: StepIo,
): Promise<BaseBinary> {
  const result: BaseBinary = {
    baseNodePath: process.execPath,
    nodeSource: process.execPath,
    stripped: false,
    notes: [],
  };
  if (plan.cross) {
    const fetched = await ensureNodeBinary(plan.spec, plan.nodeVersion, plan.cacheDir, io);
    result.baseNodePath = fetched.binaryPath;
    result.nodeSource = fetched.source;
  }
  const { binaryPath } = plan;
  fs.rmSync(binaryPath, { force: true });
  fs.copyFileSync(result.baseNodePath, binaryPath);
  fs.chmodSync(binaryPath, 0o755);
  io.log(
    `      from ${result.nodeSource === process.execPath ? result.nodeSource : `${result.nodeSource} (${display(result.baseNodePath)})`}`,
  );
  const stripTool = wantStrip && plan.strippable ? which('strip') : undefined;
  if (stripTool) {
    // Strip BEFORE injecting: stripping an injected binary drops the note postject added and the
    // result dies with SIGSEGV at start-up (measured with binutils strip and node 20.20.2).
    runChecked(stripTool, [binaryPath], io);
    result.stripped = true;
    io.log(
      `      stripped with ${stripTool}: ${mib(fileSize(result.baseNodePath))} → ${mib(fileSize(binaryPath))}`,
    );
  } else if (wantStrip && plan.strippable) {
    result.notes.push("'strip' not found: the binary keeps its symbols (about 12 MiB more)");
  }
  if (plan.spec.format === 'pe') {
    // The Authenticode signature of node.exe does not survive the injection: remove it first, as
    // `signtool remove /s` would; sign the result yourself if your Windows hosts require it.
    const { bytes, removed } = removeAuthenticode(fs.readFileSync(binaryPath));
    if (bytes) fs.writeFileSync(binaryPath, bytes);
    if (removed > 0)
      io.log(`      removed the (now invalid) Node.js Authenticode signature (${removed} bytes)`);
  }
  return result;
}

/** postject puts the blob into the binary and flips the fuse; on a Mac the result is signed ad hoc. */
export function injectBlob(binaryPath: string, blobPath: string, spec: TargetSpec, io: StepIo): void {
  const postjectCli = localRequire.resolve('postject/dist/cli.js');
  const args = [postjectCli, binaryPath, SEA_RESOURCE, blobPath, '--sentinel-fuse', SEA_FUSE];
  if (spec.format === 'macho') args.push('--macho-segment-name', MACHO_SEGMENT);
  // postject's LIEF prints harmless "Can't find string offset for section name '.note…'" warnings
  // for node's ELF binaries: they are shown with --verbose or when injection fails.
  runChecked(process.execPath, args, io);
  if (spec.format === 'macho' && process.platform === 'darwin') {
    const codesign = which('codesign');
    if (codesign) {
      runChecked(codesign, ['--sign', '-', binaryPath], io);
      io.log('      ad-hoc signed with codesign --sign -');
    }
  }
}
