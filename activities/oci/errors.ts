/**
 * The one error the OCI code throws: a named check and a one-line detail, so a refusal says which
 * check failed (signature, digest, media-type, platform, auth, registry, stalled...).
 */
export class OciError extends Error {
  override readonly name = 'OciError';
  constructor(
    readonly check: string,
    detail: string,
    /** Worth another attempt (a dropped or stalled connection, a 5xx); never a refusal of content. */
    readonly retryable = false,
  ) {
    super(`oci check "${check}" failed: ${detail.split('\n')[0]}`);
  }
}
