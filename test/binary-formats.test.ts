import { closeSync, openSync, readSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkHeader, machoSummary, removeAuthenticode } from '../scripts/build-agent/binary-formats.js';

const fail = (what: string): never => {
  throw new Error(what);
};

/** A PE32+ header for x64 whose certificate table holds `cert` at `certAt` (or at the end). */
function peFile({ cert = 16, trailing = 0 }: { cert?: number; trailing?: number } = {}): Buffer {
  const peAt = 0x80;
  const optional = peAt + 24;
  const dataDirectories = optional + 112;
  const body = dataDirectories + 16 * 8;
  const buf = Buffer.alloc(body + cert + trailing);
  buf.write('MZ', 0, 'latin1');
  buf.writeUInt32LE(peAt, 0x3c);
  buf.write('PE\0\0', peAt, 'latin1');
  buf.writeUInt16LE(0x8664, peAt + 4);
  buf.writeUInt16LE(0x20b, optional);
  buf.writeUInt32LE(16, dataDirectories - 4);
  if (cert > 0) {
    buf.writeUInt32LE(body, dataDirectories + 4 * 8);
    buf.writeUInt32LE(cert, dataDirectories + 4 * 8 + 4);
    buf.fill(0xcc, body, body + cert);
  }
  return buf;
}

/** A 64-bit arm64 Mach-O header with the given segments and, if asked, a code signature. */
function machoFile(segments: string[], signed: boolean): Buffer {
  const commands = segments.map((name) => {
    const cmd = Buffer.alloc(72);
    cmd.writeUInt32LE(0x19, 0);
    cmd.writeUInt32LE(72, 4);
    cmd.write(name, 8, 'latin1');
    return cmd;
  });
  if (signed) {
    const cmd = Buffer.alloc(16);
    cmd.writeUInt32LE(0x1d, 0);
    cmd.writeUInt32LE(16, 4);
    commands.push(cmd);
  }
  const header = Buffer.alloc(32);
  header.writeUInt32LE(0xfeedfacf, 0);
  header.writeUInt32LE(0x0100000c, 4);
  header.writeUInt32LE(commands.length, 16);
  return Buffer.concat([header, ...commands]);
}

describe('the executable headers the agent build reads (scripts/build-agent/binary-formats.ts)', () => {
  it.skipIf(process.platform !== 'linux')(
    'reads ELF: this machine node binary is a 64-bit ELF for its CPU, and not for the other one',
    () => {
      const head = Buffer.alloc(64);
      const fd = openSync(process.execPath, 'r');
      readSync(fd, head, 0, 64, 0);
      closeSync(fd);
      const arch = process.arch === 'arm64' ? 'arm64' : 'x64';
      const other = arch === 'x64' ? 'arm64' : 'x64';
      expect(checkHeader(head, { format: 'elf', arch, segment: 'NODE_SEA' }, fail)).toMatch(/^ELF 64-bit/);
      expect(() => checkHeader(head, { format: 'elf', arch: other, segment: 'NODE_SEA' }, fail)).toThrow(
        `expected ${other}`,
      );
      expect(() => checkHeader(peFile(), { format: 'elf', arch, segment: 'NODE_SEA' }, fail)).toThrow(
        'not an ELF file',
      );
    },
  );

  it('reads PE: machine and certificate table; a file without MZ is refused', () => {
    const expected = { format: 'pe', arch: 'x64', segment: 'NODE_SEA' } as const;
    expect(checkHeader(peFile(), expected, fail)).toBe(
      "PE 'MZ'/'PE\\0\\0', machine 0x8664, has a certificate table",
    );
    expect(checkHeader(peFile({ cert: 0 }), expected, fail)).toMatch(/unsigned$/);
    expect(() => checkHeader(peFile(), { ...expected, arch: 'arm64' }, fail)).toThrow(
      'PE machine 0x8664, expected arm64',
    );
    expect(() => checkHeader(Buffer.alloc(0x40), expected, fail)).toThrow('not a PE file (no MZ)');
  });

  it('removes an Authenticode signature: the entry cleared, the table cut off when it ends the file', () => {
    const signed = peFile({ cert: 24 });
    const length = signed.length;
    const { bytes, removed } = removeAuthenticode(signed);
    expect(removed).toBe(24);
    expect(bytes!.length).toBe(length - 24);
    expect(checkHeader(bytes!, { format: 'pe', arch: 'x64', segment: 'NODE_SEA' }, fail)).toMatch(
      /unsigned$/,
    );

    // A table that is not at the end: only the entry is cleared, nothing is cut.
    const inside = removeAuthenticode(peFile({ cert: 24, trailing: 64 }));
    expect(inside.removed).toBe(0);
    expect(inside.bytes!.length).toBe(peFile({ cert: 24, trailing: 64 }).length);
    expect(checkHeader(inside.bytes!, { format: 'pe', arch: 'x64', segment: 'NODE_SEA' }, fail)).toMatch(
      /unsigned$/,
    );

    expect(removeAuthenticode(peFile({ cert: 0 }))).toEqual({ bytes: null, removed: 0 });
  });

  it('reads Mach-O: cputype, the NODE_SEA segment and whether a code signature is there', () => {
    const expected = { format: 'macho', arch: 'arm64', segment: 'NODE_SEA' } as const;
    expect(machoSummary(machoFile(['__TEXT', 'NODE_SEA'], true))).toEqual({
      segments: ['__TEXT', 'NODE_SEA'],
      signed: true,
    });
    expect(checkHeader(machoFile(['__TEXT', 'NODE_SEA'], false), expected, fail)).toBe(
      'Mach-O 64-bit, cputype 0x100000c, segment NODE_SEA present, no code signature (unsigned)',
    );
    expect(() => checkHeader(machoFile(['__TEXT'], true), expected, fail)).toThrow('no NODE_SEA segment');
    expect(() => checkHeader(machoFile(['NODE_SEA'], true), { ...expected, arch: 'x64' }, fail)).toThrow(
      'Mach-O cputype 0x100000c, expected x64',
    );
    expect(() => checkHeader(peFile(), expected, fail)).toThrow('not a 64-bit Mach-O file');
  });
});
