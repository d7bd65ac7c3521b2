/**
 * Payloads at rest: a lineage run by imgflow's encrypting client and workers leaves none of its
 * version records, messages or reasons in the server's database, while the client reads them in
 * plain; workflow ids and search attributes stay readable by design. A run started by a client
 * without the codec shows the check sees payloads: its marker is in the database (and that client
 * cannot read what the workers sealed).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { describe, expect, inject, it } from 'vitest';
import { registerVersionUpdate, revokeUpdate, versionsQuery } from '../../workflows/lineage/messages.js';
import { lineageWorkflow } from '../../workflows/lineage/workflow.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { newVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

/** The dev server's SQLite database and its journals, as bytes on disk. */
function databaseBytes(): Buffer {
  const db = inject('temporalDbFile');
  const files = fs.readdirSync(path.dirname(db)).filter((f) => f.startsWith(path.basename(db)));
  return Buffer.concat(files.map((f) => fs.readFileSync(path.join(path.dirname(db), f))));
}

const stored = (text: string) => databaseBytes().includes(Buffer.from(text, 'utf8'));

describe('encrypted payloads', () => {
  it('keeps version records, messages and reasons out of the database; the client reads them in plain', async () => {
    const marker = `secret-recipe-${randomUUID()}`;
    const plainMarker = `plain-recipe-${randomUUID()}`;
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const image = uniqueQueue('enc');
    const plainImage = uniqueQueue('plain');
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue,
        workflowId: `lineage-${image}`,
        args: [{ image }],
      });
      const version = {
        ...newVersion(1),
        message: `built from ${marker}`,
        provenance: { ...newVersion(1).provenance, source: `tarball ${marker}` },
      };
      await h.executeUpdate(registerVersionUpdate, { args: [version] });
      await h.executeUpdate(revokeUpdate, { args: [{ by: 'alice', version: 'v1', reason: `leaks ${marker}` }] });
      const view = await h.query(versionsQuery, {});
      expect(view.versions[0]).toMatchObject({
        message: `built from ${marker}`,
        revoked: { reason: `leaks ${marker}` },
      });

      // The same through a client without the codec: its input stays plain (workers pass plain
      // payloads through), and it cannot read the result the worker sealed.
      const plainClient = new Client({ connection, namespace: NAMESPACE });
      const p = await plainClient.workflow.start(lineageWorkflow, {
        taskQueue,
        workflowId: `lineage-${plainImage}`,
        args: [{ image: plainImage }],
      });
      await expect(
        p.executeUpdate(registerVersionUpdate, { args: [{ ...newVersion(1), message: `built from ${plainMarker}` }] }),
      ).rejects.toThrow(/Unknown encoding: binary\/encrypted/);
      await h.terminate('test done');
      await p.terminate('test done');
    });
    await connection.close();

    // Once the plain run's marker and the encrypted run's id are on disk, the encrypted run is there too.
    await until('both runs written to the database', () => stored(plainMarker) && stored(`lineage-${image}`), 30_000);
    expect(stored(marker)).toBe(false);
    expect(stored(image)).toBe(true);
  });
});
