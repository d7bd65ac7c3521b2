/**
 * The image the demo builds: a minimal Debian from the machine's own mirror, prepared as a
 * cluster node image, with one hook of each kind a site would use.
 */
import { machineMirror, parseRecipe, recipeDigest, type Recipe } from '../activities/builder/recipe.js';
import { machineArch } from '../lib/config.js';

export const DEMO_IMAGE = 'demo-node';

export function demoRecipe(): { recipe: Recipe; digest: string } {
  const text = `
image: ${DEMO_IMAGE}
arch: ${machineArch()}
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
