/** The Rocks bridge's options that its command's help names, without the bridge (or amqplib) loaded. */

/**
 * What the bridge promises about `bdev`: `block` (the default) maps only where the answer is a
 * block device Rocks can give a VM as `phy:` (compute hosts attaching iSCSI through the kernel, or
 * sync mode's local copy); `any` passes on whatever the volume gives (a file or URL), for sites
 * and tests that use it otherwise.
 */
export type BdevMode = 'block' | 'any';
export const BDEV_MODES: readonly BdevMode[] = ['block', 'any'];
