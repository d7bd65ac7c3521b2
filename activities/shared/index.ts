/**
 * The helpers every role's activities share, beneath them all: no role imports another role, only
 * this module and the drivers (`../drivers/`).
 */
export { currentActivity, heartbeat, type ActivityDeps } from './activity.js';
export { isPasswordHash, usersWithPasswords, type InstalledPackage, type ManifestEntry } from './image.js';
export { remoteRun, type RemoteRun } from './remote.js';
