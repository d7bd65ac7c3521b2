/**
 * The image the demo builds: a minimal Debian from the machine's own mirror, prepared as a
 * cluster node image, with one hook of each kind a site would use. Built for the machine's own
 * arch as `demo-node`, and for a second arch as `demo-node-<arch>`: a lineage per arch, so the
 * channels, pushes and revocations of `demo-node` stay about one arch.
 */
import { machineMirror, parseRecipe, recipeDigest, type Recipe } from '../activities/builder/recipe.js';
import { machineArch } from '../lib/config.js';

export const DEMO_IMAGE = 'demo-node';

/** The demo image's lineage for `arch`: `demo-node` for the machine's own, `demo-node-<arch>` for another. */
export const demoImage = (arch: string): string => (arch === machineArch() ? DEMO_IMAGE : `${DEMO_IMAGE}-${arch}`);

export function demoRecipe(arch: string = machineArch()): { recipe: Recipe; digest: string } {
  const text = `
image: ${demoImage(arch)}
arch: ${arch}
os: debian-12
source:
  debootstrap:
    suite: bookworm
    variant: minbase
hooks:
  site:
    - name: motd
      run: [/bin/sh, -c, 'echo "built by imgflow" > /etc/motd']
  image:
    - name: marker
      run: [/usr/bin/touch, /etc/imgflow-demo]
prepare:
  hostname: node
  network: remove
outputs: [qcow2]
`;
  const mirror = machineMirror();
  const recipe = parseRecipe(text, process.cwd(), mirror ? { defaultMirror: mirror } : {});
  return { recipe, digest: recipeDigest(recipe) };
}
