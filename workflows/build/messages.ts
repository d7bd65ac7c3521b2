/** What a build is asked and answers: the lineage queues requests and registers results. */
import type { Recipe } from '../../activities/builder/recipe.js';
import type { NewVersion } from '../../common/lineage.js';
import type { NotifyTarget } from '../../common/events.js';

export interface BuildRequest {
  recipe: Recipe;
  recipeDigest: string;
  by: string;
  message: string;
  /** The NAS whose image store keeps the version. */
  store: string;
  /** How long to wait for a builder of the arch to take work before failing the build. */
  builderWaitSeconds?: number;
  /** Who else hears of this build's start and end (webhooks without secrets, e-mail addresses). */
  notify?: NotifyTarget[];
}

export interface BuildInput extends BuildRequest {
  /** The version this build becomes, assigned by the lineage when the build starts. */
  version: string;
}

export interface BuildResult {
  version: string;
  record: NewVersion;
}
