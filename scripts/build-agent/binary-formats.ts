/**
 * The few fields of ELF, PE and Mach-O headers the build reads or writes, on a Buffer.
 *
 * Why hand-written: the build needs (a) to tell, without running it, that a cross-built binary is an
 * executable for the right OS and CPU and (for macOS) carries the NODE_SEA segment, and (b) to drop
 * node.exe's Authenticode signature before injecting, as `signtool remove /s` would (postject rewrites
 * the resources, and the certificate-table entry would then point into them). postject, already in the
 * tree, exposes injection only (its LIEF parser is compiled into it and not exported), and nothing else
 * in the tree reads executables. What is needed is a magic number and a machine field per format, one PE
 * data-directory entry and a walk over Mach-O load commands: fixed offsets from the published formats,
 * about 100 lines, tested in test/binary-formats.test.ts. A parsing library (e.g. pe-library, or a
 * LIEF build) would add a dependency of its own to the build for less than it replaces.
 */
import type { BinaryFormat, TargetArch } from './targets.js';
import { BuildAgentError } from './tools.js';

const ELF_MACHINES: Record<TargetArch, number> = { x64: 0x3e, arm64: 0xb7 };
const PE_MACHINES: Record<TargetArch, number> = { x64: 0x8664, arm64: 0xaa64 };
const MACHO_CPUS: Record<TargetArch, number> = { x64: 0x01000007, arm64: 0x0100000c };
const MACHO_MAGIC_64 = 0xfeedfacf;
const LC_SEGMENT_64 = 0x19;
const LC_CODE_SIGNATURE = 0x1d;
/** IMAGE_DIRECTORY_ENTRY_SECURITY: its entry holds a file offset, not an RVA. */
const PE_SECURITY_DIRECTORY = 4;

/** Throws with what is wrong with the binary; the caller names the file. */
export type Fail = (what: string) => never;

/** Offset of the `PE\0\0` signature, or a BuildAgentError when `buf` is not a PE file. */
export function peHeaderOffset(buf: Buffer): number {
  if (buf.length < 0x40 || buf.toString('latin1', 0, 2) !== 'MZ')
    throw new BuildAgentError('not a PE file (no MZ)');
  const pe = buf.readUInt32LE(0x3c);
  if (pe + 24 > buf.length || buf.toString('latin1', pe, pe + 4) !== 'PE\0\0') {
    throw new BuildAgentError('not a PE file (no PE signature)');
  }
  return pe;
}

/** Offset of the PE certificate-table entry (offset, size), or null when the file has no such entry. */
function peSecurityEntry(buf: Buffer): number | null {
  const optional = peHeaderOffset(buf) + 24;
  // PE32+ (0x20b) has 8-byte image base and stack sizes: its data directories start 16 bytes later.
  const dataDirectories = optional + (buf.readUInt16LE(optional) === 0x20b ? 112 : 96);
  const rvaCount = buf.readUInt32LE(dataDirectories - 4);
  return rvaCount <= PE_SECURITY_DIRECTORY ? null : dataDirectories + PE_SECURITY_DIRECTORY * 8;
}

/**
 * `buf` with its Authenticode signature removed: the certificate-table entry cleared and, when the
 * table is the last thing in the file (as signing leaves it, 8-byte aligned), cut off. `bytes` is null
 * when there was none; `removed` counts the bytes cut.
 */
export function removeAuthenticode(buf: Buffer): { bytes: Buffer | null; removed: number } {
  const entry = peSecurityEntry(buf);
  if (entry === null) return { bytes: null, removed: 0 };
  const offset = buf.readUInt32LE(entry);
  const size = buf.readUInt32LE(entry + 4);
  if (offset === 0 || size === 0) return { bytes: null, removed: 0 };
  buf.writeUInt32LE(0, entry);
  buf.writeUInt32LE(0, entry + 4);
  const end = offset + size;
  const atEnd = end <= buf.length && buf.length - end < 8;
  return atEnd
    ? { bytes: buf.subarray(0, offset), removed: buf.length - offset }
    : { bytes: buf, removed: 0 };
}

/** The LC_SEGMENT_64 names and whether an LC_CODE_SIGNATURE is there, from a 64-bit Mach-O header. */
export function machoSummary(buf: Buffer): { segments: string[]; signed: boolean } {
  const ncmds = buf.readUInt32LE(16);
  const segments: string[] = [];
  let signed = false;
  let offset = 32;
  for (let i = 0; i < ncmds && offset + 8 <= buf.length; i++) {
    const cmd = buf.readUInt32LE(offset);
    const size = buf.readUInt32LE(offset + 4);
    if (cmd === LC_SEGMENT_64)
      segments.push(buf.toString('latin1', offset + 8, offset + 24).replace(/\0+$/, ''));
    if (cmd === LC_CODE_SIGNATURE) signed = true;
    if (size < 8) break;
    offset += size;
  }
  return { segments, signed };
}

/** Checks that `buf` is a 64-bit executable of `format` for `arch`; returns what it verified. */
export function checkHeader(
  buf: Buffer,
  expected: { format: BinaryFormat; arch: TargetArch; segment: string },
  fail: Fail,
): string {
  const { arch } = expected;
  if (expected.format === 'elf') {
    if (buf.toString('latin1', 0, 4) !== '\x7fELF') fail('not an ELF file');
    if (buf[4] !== 2 || buf[5] !== 1) fail('not a 64-bit little-endian ELF file');
    const machine = buf.readUInt16LE(0x12);
    if (machine !== ELF_MACHINES[arch]) fail(`ELF machine 0x${machine.toString(16)}, expected ${arch}`);
    return `ELF 64-bit, machine ${arch === 'arm64' ? 'aarch64 (0xb7)' : 'x86-64 (0x3e)'}`;
  }
  if (expected.format === 'pe') {
    const machine = buf.readUInt16LE(peHeaderOffset(buf) + 4);
    if (machine !== PE_MACHINES[arch]) fail(`PE machine 0x${machine.toString(16)}, expected ${arch}`);
    const entry = peSecurityEntry(buf);
    const signed = entry !== null && buf.readUInt32LE(entry + 4) !== 0;
    return `PE 'MZ'/'PE\\0\\0', machine 0x${machine.toString(16)}, ${signed ? 'has a certificate table' : 'unsigned'}`;
  }
  if (buf.readUInt32LE(0) !== MACHO_MAGIC_64) fail('not a 64-bit Mach-O file (magic 0xfeedfacf)');
  const cpu = buf.readUInt32LE(4);
  if (cpu !== MACHO_CPUS[arch]) fail(`Mach-O cputype 0x${cpu.toString(16)}, expected ${arch}`);
  const macho = machoSummary(buf);
  if (!macho.segments.includes(expected.segment)) fail(`no ${expected.segment} segment`);
  return (
    `Mach-O 64-bit, cputype 0x${cpu.toString(16)}, segment ${expected.segment} present, ` +
    (macho.signed ? 'has LC_CODE_SIGNATURE' : 'no code signature (unsigned)')
  );
}
