import { describe, expect, it } from 'vitest';
import { didYouMean, nearest } from './nearest.js';

describe('nearest', () => {
  it('finds what a typo meant: the same but for case first, else the closest within a budget', () => {
    expect(nearest('prod', ['Prod', 'staging', 'prods'])).toEqual(['Prod']);
    expect(nearest('enrolment', ['enrollment', 'session', 'group'])).toEqual(['enrollment']);
    expect(nearest('sesion', ['session', 'enrollment'])).toEqual(['session']);
    expect(nearest('edge-eu', ['edge-us', 'edge-ew', 'core'])).toEqual(['edge-ew']);
    expect(nearest('edge-x', ['edge-a', 'edge-b', 'core'])).toEqual(['edge-a', 'edge-b']);
  });

  it('counts two neighbouring letters swapped as one typo', () => {
    expect(nearest('Wbe', ['Web', 'Ops'])).toEqual(['Web']);
    expect(nearest('conenctor.revoked', ['connector.revoked', 'connector.deleted'])).toEqual([
      'connector.revoked',
    ]);
    expect(nearest('enrolmnet', ['enrollment'])).toEqual(['enrollment']);
    // Still no guess for a word that is not a near miss.
    expect(nearest('bWe', ['Web'])).toEqual([]);
  });

  it('suggests nothing for a word like none of them, nor the word itself', () => {
    expect(nearest('payments', ['Prod', 'staging'])).toEqual([]);
    expect(nearest('ab', ['xy'])).toEqual([]);
    expect(nearest('Prod', ['Prod'])).toEqual([]);
    expect(nearest('x', [])).toEqual([]);
  });

  it('words it as a question', () => {
    expect(didYouMean([])).toBe('');
    expect(didYouMean(['Prod'])).toBe(' did you mean "Prod"?');
    expect(didYouMean(['a', 'b', 'c'])).toBe(' did you mean "a", "b" or "c"?');
  });
});
