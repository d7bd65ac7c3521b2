/**
 * Determinism guard: every saved history replays against today's workflow code, and every
 * workflow type has at least one saved history.
 */
import fs from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import * as workflows from '../../workflows/index.js';
import { HISTORIES_DIR } from '../support/histories.js';

function savedHistories() {
  return fs
    .readdirSync(HISTORIES_DIR)
    .filter((f) => f.endsWith('.history.pb'))
    .map((file) => {
      const history = temporal.api.history.v1.History.decode(fs.readFileSync(path.join(HISTORIES_DIR, file)));
      const type = history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ?? '?';
      return { file, type, history };
    });
}

describe('replay of saved histories', () => {
  const saved = savedHistories();

  it('has a saved history for every workflow type', () => {
    const covered = new Set(saved.map((h) => h.type));
    expect(Object.keys(workflows).filter((type) => !covered.has(type))).toEqual([]);
  });

  it('replays every saved history without a nondeterminism error', async () => {
    const results = Worker.runReplayHistories(
      { workflowBundle: { codePath: inject('workflowBundlePath') }, replayName: 'imgflow-replay' },
      saved.map(({ file, history }) => ({ workflowId: file, history })),
    );
    const failures: string[] = [];
    for await (const result of results)
      if (result.error) failures.push(`${result.workflowId}: ${result.error.message}`);
    expect(failures).toEqual([]);
    expect(saved.length).toBeGreaterThan(0);
  });
});
