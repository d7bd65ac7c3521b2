/** Every workflow type imgflow runs; the worker bundles this file. */
export { demoWorkflow } from './demo.js';
export { pingWorkflow } from './ping.js';
export { pushWorkflow } from './push/workflow.js';
export { lineageWorkflow } from './lineage.js';
export { lineageGcWorkflow } from './lineage.js';
export { lineageHistoryWorkflow } from './lineage.js';
export { lineageArchivedVersionWorkflow } from './lineage.js';
export { diffWorkflow } from './diff.js';
export { buildWorkflow } from './build.js';
export { subscriptionWorkflow } from './subscription.js';
export { subscriptionSyncWorkflow } from './subscription.js';
export { subscriptionTickWorkflow } from './subscription.js';
export { validateWorkflow } from './validate.js';
export { volumeWorkflow } from './volume.js';
