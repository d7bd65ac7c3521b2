import { describe, expect, it } from 'vitest';
import { oneLine } from '../../starters/output.js';

describe('errors as one line', () => {
  it('reaches through Temporal wrappers to the reason', () => {
    const err = new Error('Workflow execution failed', {
      cause: new Error('Activity task failed', { cause: new Error('qemu-img: disk full') }),
    });
    expect(oneLine(err)).toBe('qemu-img: disk full');
  });

  it('joins a multi-line message with "; "', () => {
    expect(oneLine(new Error('recipe.arch: expected x86_64\n  recipe.suite: expected a suite\n'))).toBe(
      'recipe.arch: expected x86_64; recipe.suite: expected a suite',
    );
  });

  it('says what to do when no worker answers a query', () => {
    const err = new Error('Failed to query Workflow', {
      cause: new Error('4 DEADLINE_EXCEEDED: query timed out before a worker could process it'),
    });
    expect(oneLine(err)).toBe(
      "query timed out before a worker could process it: is an orchestrator worker running? ('imgflow dev' runs one of each role)",
    );
  });

  it('keeps the reason of a query that failed for another cause', () => {
    const err = new Error('Failed to query Workflow', {
      cause: new Error('5 NOT_FOUND: workflow not found for ID: lineage-x'),
    });
    expect(oneLine(err)).toBe('workflow not found for ID: lineage-x');
  });
});
