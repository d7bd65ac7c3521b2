/** Every workflow type imgflow runs; the worker bundles this file. */
export { demoWorkflow } from './demo.js';
export { pingWorkflow } from './ping.js';
export { lineageWorkflow } from './lineage.js';
export { buildWorkflow } from './build.js';
