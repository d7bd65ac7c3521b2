/**
 * Saved workflow histories for replay tests. A test that runs a workflow to completion passes
 * its handle here; with IMGFLOW_SAVE_HISTORIES=1 the history is written (protobuf) to test/histories/, where
 * the replay test finds it. Commit the file: it pins the workflow's behaviour as it ran.
 * Payloads are saved decoded, so the replay needs no key of the run that recorded them.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { isEncrypted } from '../../lib/codec.js';
import { decodePayload } from './temporal.js';

/** Replaces every encrypted payload anywhere in a history message with its decoded original. */
async function decodeDeep<T>(value: T): Promise<T> {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  if (isEncrypted(value)) return (await decodePayload(value)) as T;
  for (const [key, child] of Object.entries(value)) (value as Record<string, unknown>)[key] = await decodeDeep(child);
  return value;
}

export const HISTORIES_DIR = fileURLToPath(new URL('../histories/', import.meta.url));

export async function saveHistory(name: string, handle: WorkflowHandle): Promise<void> {
  if (process.env.IMGFLOW_SAVE_HISTORIES !== '1') return;
  const history = await decodeDeep(await handle.fetchHistory());
  fs.mkdirSync(HISTORIES_DIR, { recursive: true });
  fs.writeFileSync(`${HISTORIES_DIR}${name}.history.pb`, temporal.api.history.v1.History.encode(history).finish());
}
