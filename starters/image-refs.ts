/**
 * How the CLI names an image's versions on its command line. Pure: commands check what was typed
 * here before anything (the Temporal SDK included) is loaded.
 */
import { checkName, InputError } from '../common/names.js';

/** What a volume or a bridge may be cloned from. */
export const BASE_REF = '<image>[:<version or tag>], <image>@<channel> or <image>%<VM pack>';

/** `image`, `image:version` or `image:tag`. */
export function parseImageRef(ref: string): { image: string; ref?: string } {
  const [image, rest, extra] = ref.split(':');
  if (extra !== undefined || rest === '') throw new InputError('image', '<image>[:<version or tag>]', ref);
  return { image: checkName('image', image), ...(rest ? { ref: rest } : {}) };
}
