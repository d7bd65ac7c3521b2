/** The drivers behind clone-to-compute, and one place to pick them by kind from configuration. */
import { createIscsiDirectAttach, createLocalAttach, createNbdDirectAttach } from './attach/direct.js';
import { createIscsiKernelAttach } from './attach/iscsi-kernel.js';
import { createLioExport, type LioExportConfig } from './export/lio.js';
import { createNbdExport, type NbdExportConfig } from './export/nbd.js';
import { createNoneExport, type NoneExportConfig } from './export/none.js';
import { createTgtExport, type TgtExportConfig } from './export/tgt.js';
import { createQcow2Storage, type Qcow2StorageConfig } from './storage/qcow2.js';
import { createZfsStorage, type ZfsStorageConfig } from './storage/zfs.js';
import type { AttachDriver, ExportDriver, StorageDriver } from './types.js';
import type { Run } from '../runner.js';

export * from './types.js';
export { createPipe } from './pipe.js';
export { replicate, viaSsh, type ReplicateInput, type ReplicateResult } from './storage/replication.js';
export { createQcow2Storage, createZfsStorage, createTgtExport, createLioExport, createNbdExport, createNoneExport };
export { createIscsiKernelAttach, createIscsiDirectAttach, createNbdDirectAttach, createLocalAttach };

export type StorageConfig = ({ kind: 'qcow2' } & Qcow2StorageConfig) | ({ kind: 'zfs' } & ZfsStorageConfig);

export function createStorage(config: StorageConfig): StorageDriver {
  return config.kind === 'zfs' ? createZfsStorage(config) : createQcow2Storage(config);
}

export type ExportConfig =
  | ({ kind: 'tgt' } & TgtExportConfig)
  | ({ kind: 'lio' } & LioExportConfig)
  | ({ kind: 'nbd' } & NbdExportConfig)
  | ({ kind: 'none' } & NoneExportConfig);

export function createExport(config: ExportConfig): ExportDriver {
  switch (config.kind) {
    case 'tgt':
      return createTgtExport(config);
    case 'lio':
      return createLioExport(config);
    case 'nbd':
      return createNbdExport(config);
    case 'none':
      return createNoneExport(config);
  }
}

export type AttachConfig =
  | { kind: 'iscsi-kernel'; run: Run; deviceTimeoutMs?: number }
  | { kind: 'iscsi-direct'; run: Run; initiatorName: string }
  | { kind: 'nbd-direct'; run: Run }
  | { kind: 'local'; run: Run };

export function createAttach(config: AttachConfig): AttachDriver {
  switch (config.kind) {
    case 'iscsi-kernel':
      return createIscsiKernelAttach(config);
    case 'iscsi-direct':
      return createIscsiDirectAttach(config);
    case 'nbd-direct':
      return createNbdDirectAttach(config);
    case 'local':
      return createLocalAttach(config);
  }
}
