/** Every workflow type imgflow runs; the worker bundles this file. */
export { demoWorkflow } from './demo.js';
export { pingWorkflow } from './ping.js';
export { pushWorkflow } from './push/workflow.js';
export { lineageWorkflow } from './lineage/workflow.js';
export { lineageGcWorkflow } from './lineage/gc-workflow.js';
export { lineageHistoryWorkflow } from './lineage/history-workflow.js';
export { lineageArchivedVersionWorkflow } from './lineage/archived-version-workflow.js';
export { diffWorkflow } from './diff.js';
export { buildWorkflow } from './build/workflow.js';
export { subscriptionWorkflow } from './subscription/workflow.js';
export { subscriptionSyncWorkflow } from './subscription/sync-workflow.js';
export { subscriptionTickWorkflow } from './subscription/tick-workflow.js';
export { validateWorkflow } from './validate.js';
export { volumeWorkflow } from './volume/workflow.js';
export { rolloutWorkflow } from './rollout/workflow.js';
export { eventsWorkflow } from './events/workflow.js';
export { deliveryWorkflow } from './events/delivery-workflow.js';
