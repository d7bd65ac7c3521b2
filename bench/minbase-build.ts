/** The build the builder benches time: bookworm minbase from `mirror`, prepared with the defaults. */
import type { DebootstrapSource, PrepareOptions } from '../activities/builder/recipe.js';

export const minbaseSource = (mirror: string): DebootstrapSource => ({
  kind: 'debootstrap',
  suite: 'bookworm',
  variant: 'minbase',
  components: ['main'],
  packages: [],
  mirror,
});

export const MINBASE_PREPARE: PrepareOptions = {
  network: 'remove',
  removeServices: [],
  private: [],
  shared: false,
  allowPasswordHashes: false,
};
