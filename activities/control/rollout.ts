/**
 * A rollout's steps, on queue `control`: each is a validated update of the entity it changes (a
 * lineage's pack, promote or rollback; a volume's stage), sent with the worker's own client, so the
 * entity checks it as it checks a person's request. Every step looks before it acts: a retry after
 * a lost answer, or a member already where it is going, changes nothing.
 */
import { Context, sleep } from '@temporalio/activity';
import { WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { ChannelEntry, TestResult } from '../../common/lineage.js';
import type { BaseVersion } from '../../common/volume.js';
import {
  describeQuery,
  lineageWorkflowId,
  packUpdate,
  promoteUpdate,
  rollbackUpdate,
  testOfQuery,
} from '../../workflows/lineage/messages.js';
import { stageUpdate, volumeWorkflowId } from '../../workflows/volume/messages.js';

export interface MovePackInput {
  image: string;
  name: string;
  kind: 'netboot' | 'vm';
  by: string;
  /** Where the pack goes, and where the caller saw it (a pack on neither moved since: refused). */
  tag: string;
  expect: { tag: string; version: string };
}

export interface StageVolumeInput {
  volume: string;
  by: string;
  base: BaseVersion;
  expect?: string;
  rollout: string;
}

export interface ChannelInput {
  image: string;
  channel: string;
  tag: string;
  by: string;
  force?: boolean;
  reason?: string;
}

export interface AwaitTestInput {
  image: string;
  tag: string;
  /** Only a result recorded at or after this time counts (the wave's moves were done then). */
  after: string;
  /** The gate's deadline: no result by then fails the step. */
  until: string;
  /** Between two reads of the lineage. */
  everyMs?: number;
}

export interface StepResult {
  changed: boolean;
  detail: string;
}

const client = (): Client => Context.current().client;

/** An update the entity refused or failed is final (a retry gets the same answer); anything else is retried. */
async function update<T>(send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause as { message?: string; type?: string } | undefined;
      throw ApplicationFailure.nonRetryable(cause?.message ?? err.message, cause?.type ?? 'UpdateFailed');
    }
    throw err;
  }
}

export function createRolloutActivities() {
  return {
    /** Packs the tag under the member's name (the lineage moves the previous directory aside). */
    async rolloutMovePack(input: MovePackInput): Promise<StepResult> {
      const lineage = client().workflow.getHandle(lineageWorkflowId(input.image));
      const current = (await lineage.query(describeQuery)).packs[input.name];
      if (current?.tag === input.tag)
        return { changed: false, detail: `${input.name} already at ${input.tag} (${current.path} on ${current.host})` };
      if (!current || (current.tag !== input.expect.tag && current.version !== input.expect.version))
        throw ApplicationFailure.nonRetryable(
          `pack ${input.name}: expected it at ${input.expect.tag} (${input.expect.version}), found ${current ? `${current.tag} (${current.version})` : 'no such pack'}: it moved since the rollout began`,
          'InputError',
        );
      const done = await update(() =>
        lineage.executeUpdate(packUpdate, {
          args: [{ by: input.by, tag: input.tag, as: input.name, kind: input.kind }],
        }),
      );
      return {
        changed: true,
        detail: `${done.host}:${done.path}${done.movedAside ? `, previous moved aside to ${done.movedAside}` : ''}`,
      };
    },

    /** Stages the base of the volume's next map (its running disk is left as it is). */
    async rolloutStageVolume(input: StageVolumeInput): Promise<StepResult> {
      const volume = client().workflow.getHandle(volumeWorkflowId(input.volume));
      const done = await update(() =>
        volume.executeUpdate(stageUpdate, {
          args: [
            {
              by: input.by,
              base: input.base,
              rollout: input.rollout,
              ...(input.expect ? { expect: input.expect } : {}),
            },
          ],
        }),
      );
      return { changed: done.changed, detail: done.message };
    },

    /** Points the channel at the tag (a promotion the channel already has records nothing). */
    async rolloutPromote(input: ChannelInput): Promise<ChannelEntry> {
      const lineage = client().workflow.getHandle(lineageWorkflowId(input.image));
      return update(() =>
        lineage.executeUpdate(promoteUpdate, {
          args: [
            {
              by: input.by,
              tag: input.tag,
              channel: input.channel,
              ...(input.force ? { force: true } : {}),
              ...(input.reason ? { reason: input.reason } : {}),
            },
          ],
        }),
      );
    },

    /** Rolls the channel back from the tag; a channel on another tag now (moved since) is left alone. */
    async rolloutChannelBack(input: ChannelInput): Promise<StepResult> {
      const lineage = client().workflow.getHandle(lineageWorkflowId(input.image));
      const current = (await lineage.query(describeQuery)).channels[input.channel]?.current;
      if (current?.tag !== input.tag)
        return {
          changed: false,
          detail: `${input.channel} is on ${current ? `${current.tag} (${current.version})` : 'nothing'}, not ${input.tag}: left as it is`,
        };
      const entry = await update(() =>
        lineage.executeUpdate(rollbackUpdate, {
          args: [{ by: input.by, channel: input.channel, ...(input.reason ? { reason: input.reason } : {}) }],
        }),
      );
      return { changed: true, detail: `${input.channel} back to ${entry.tag} (${entry.version})` };
    },

    /**
     * Waits for a test result of the tag recorded after `after`, reading the lineage every few
     * seconds and heartbeating (a cancelled rollout ends the wait). A failed result fails the step.
     */
    async rolloutAwaitTestResult(input: AwaitTestInput): Promise<TestResult> {
      const lineage = client().workflow.getHandle(lineageWorkflowId(input.image));
      const deadline = Date.parse(input.until);
      for (;;) {
        Context.current().heartbeat();
        const result = await lineage.query(testOfQuery, input.tag);
        if (result && result.at >= input.after) {
          if (!result.passed)
            throw ApplicationFailure.nonRetryable(
              `the test result of ${input.tag} is failed (by ${result.by}${result.note ? `: ${result.note}` : ''})`,
              'GateFailed',
            );
          return result;
        }
        if (Date.now() >= deadline)
          throw ApplicationFailure.nonRetryable(
            `no test result of ${input.tag} was recorded by ${input.until}`,
            'GateTimeout',
          );
        await sleep(input.everyMs ?? 2000);
      }
    },
  };
}

export type RolloutActivities = ReturnType<typeof createRolloutActivities>;
