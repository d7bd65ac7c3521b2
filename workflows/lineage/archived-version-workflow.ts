import { ApplicationFailure } from '@temporalio/workflow';
import type { VersionRecord } from '../../common/lineage.js';
import { readOnControl } from './read-on-control.js';

/** What `imgflow report` (and every command needing a full record) runs for a removed version whose record is archived, as `lineageHistoryWorkflow` reads history. */
export async function lineageArchivedVersionWorkflow(input: {
  image: string;
  chain: string;
  version: string;
}): Promise<VersionRecord> {
  const record = await readOnControl(`the archived record of ${input.image}:${input.version}`, (reader) =>
    reader.readArchivedVersion(input),
  );
  if (!record)
    throw ApplicationFailure.nonRetryable(
      `the version archive of ${input.image} (chain ${input.chain}) on the control host does not hold ${input.version}`,
      'ArchiveMissing',
    );
  return record;
}
