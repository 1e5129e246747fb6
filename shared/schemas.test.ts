import { describe, expect, it } from 'vitest';
import { descriptionSchema, enrollInput, groupCreateInput, hostSchema, nameSchema } from './schemas.js';

/** Characters that show as nothing (or almost nothing) in a table, each with its name. */
const INVISIBLE: Array<[string, string]> = [
  ['U+061C', '\u061c'], // Arabic letter mark
  ['U+2060', '\u2060'], // word joiner
  ['U+00AD', '\u00ad'], // soft hyphen
  ['U+3164', '\u3164'], // Hangul filler
  ['U+115F', '\u115f'], // Hangul choseong filler
  ['U+1160', '\u1160'], // Hangul jungseong filler
  ['U+FFA0', '\uffa0'], // halfwidth Hangul filler
  ['U+2800', '\u2800'], // braille pattern blank
  ['U+180E', '\u180e'], // Mongolian vowel separator
  ['U+200B', '\u200b'], // zero width space
  ['U+200D', '\u200d'], // zero width joiner
  ['U+202E', '\u202e'], // right-to-left override
  ['U+FEFF', '\ufeff'], // byte order mark
  ['U+FE0F', '\ufe0f'], // variation selector 16
  ['U+E0000', '\u{e0000}'], // tag range, first
  ['U+E0001', '\u{e0001}'], // language tag
  ['U+E0041', '\u{e0041}'], // tag latin capital A
  ['U+E007F', '\u{e007f}'], // cancel tag
  ['U+E0100', '\u{e0100}'], // variation selector 17
];

const CONTROLS: Array<[string, string]> = [
  ['U+0000', '\u0000'],
  ['U+001B', '\u001b'],
  ['U+0085', '\u0085'],
  ['U+2028', '\u2028'],
  ['U+D800', '\ud800'],
];

/** Names people write in their own scripts; none may be refused. */
const LEGITIMATE = [
  'Café Zürich',
  'Łódź – magazyn 2',
  'Ελληνικά',
  '東京オフィス',
  '서울 데이터센터',
  'مرحبا بالعالم',
  'नमस्ते', // Devanagari: combining marks are visible, and allowed
  'Ærøskøbing',
  '🚀 launch',
  'naïve façade',
  'Tiếng Việt', // two marks on one letter
  'བོད་ཡིག', // Tibetan: stacked marks
  '\u{20BB7}野家', // a CJK extension B character (astral, assigned)
];

/** Code points that stand for no letter: private use, the object replacement, noncharacters. */
const PLACEHOLDERS: Array<[string, string]> = [
  ['U+E000', '\ue000'],
  ['U+F8FF', '\uf8ff'], // a vendor logo on some machines
  ['U+F0000', '\u{f0000}'],
  ['U+FFFC', '\ufffc'],
  ['U+FDD0', '\ufdd0'],
  ['U+FFFE', '\ufffe'],
  ['U+1FFFF', '\u{1ffff}'],
  ['U+10FFFE', '\u{10fffe}'],
];

const messageOf = (result: { success: boolean; error?: { issues: Array<{ message: string }> } }) =>
  result.error?.issues.map((i) => i.message).join('; ');

describe('names and descriptions refuse invisible and control characters, naming the code point', () => {
  it.each(INVISIBLE)('%s is refused in a name and a description, anywhere in the text', (code, char) => {
    for (const text of [`a${char}b`, char, `${char}name`, `name${char}`]) {
      const result = nameSchema.safeParse(text);
      expect(result.success, JSON.stringify(text)).toBe(false);
      expect(messageOf(result)).toBe(`contains an invisible character (${code})`);
      expect(messageOf(descriptionSchema.safeParse(text))).toBe(`contains an invisible character (${code})`);
    }
  });

  it.each(CONTROLS)('%s (a control character, as before) is refused with its code point', (code, char) => {
    expect(messageOf(nameSchema.safeParse(`a${char}b`))).toBe(`contains a control character (${code})`);
  });

  it.each(LEGITIMATE)('%s is accepted as it is', (name) => {
    expect(nameSchema.parse(name)).toBe(name);
    expect(descriptionSchema.parse(name)).toBe(name);
  });

  it.each(PLACEHOLDERS)('%s (a placeholder, not a letter) is refused with its code point', (code, char) => {
    expect(messageOf(nameSchema.safeParse(`a${char}b`))).toBe(
      `contains a private-use or noncharacter code point (${code})`,
    );
  });

  it('a stack of more than 6 combining marks on one character is refused; 6 are not', () => {
    const marks = (n: number) => `Z${'\u0301'.repeat(n)}algo`;
    expect(nameSchema.parse(marks(6))).toBe(marks(6));
    expect(messageOf(nameSchema.safeParse(marks(7)))).toBe(
      'stacks 7 combining marks on one character (at most 6)',
    );
    expect(messageOf(nameSchema.safeParse(marks(40)))).toBe(
      'stacks 40 combining marks on one character (at most 6)',
    );
  });

  it('an emoji joined with U+200D (ZWJ) is refused: ZWJ is a format character like the rest', () => {
    expect(messageOf(nameSchema.safeParse('👩\u200d💻 desk'))).toBe(
      'contains an invisible character (U+200D)',
    );
  });

  it('the same rule holds in groups.create and in the agent’s --name', () => {
    expect(groupCreateInput.safeParse({ name: 'a\u2060b' }).success).toBe(false);
    expect(groupCreateInput.safeParse({ name: 'ok', description: 'x\u00ady' }).success).toBe(false);
    expect(enrollInput.shape.name.safeParse('a\u2060b').success).toBe(false);
  });
});

describe('host facts (from machines, not people) keep invisible characters, escaped', () => {
  const host = {
    hostname: 'web-1',
    os: 'Linux',
    platform: 'linux',
    release: '6.1',
    arch: 'x64',
    cpus: 1,
    memoryBytes: 1,
    ips: [],
    machineId: 'm',
  };

  it('are accepted with each invisible character written as \\u{…}, so two look-alike hosts look different', () => {
    const parsed = hostSchema.parse({ ...host, hostname: 'web\u200b-1', os: 'Linux\u{e0041}' });
    expect(parsed.hostname).toBe('web\\u{200B}-1');
    expect(parsed.os).toBe('Linux\\u{E0041}');
    // Escaping twice changes nothing: what the server stores parses to itself (the digest agrees).
    expect(hostSchema.parse(parsed)).toEqual(parsed);
  });

  it('still refuse control characters, as before', () => {
    expect(hostSchema.safeParse({ ...host, hostname: 'web\u001b[2J' }).success).toBe(false);
  });
});
