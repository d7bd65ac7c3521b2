/**
 * imgflow's typed search attributes: what makes its workflows findable in the Web UI.
 * At most 10 Keyword attributes (the PostgreSQL visibility limit); keep this list short.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA = {
  kind: defineSearchAttributeKey('ImgflowKind', SearchAttributeType.KEYWORD),
  image: defineSearchAttributeKey('ImgflowImage', SearchAttributeType.KEYWORD),
  version: defineSearchAttributeKey('ImgflowVersion', SearchAttributeType.KEYWORD),
  channels: defineSearchAttributeKey('ImgflowChannels', SearchAttributeType.KEYWORD_LIST),
  arch: defineSearchAttributeKey('ImgflowArch', SearchAttributeType.KEYWORD),
  nas: defineSearchAttributeKey('ImgflowNas', SearchAttributeType.KEYWORD),
  computeHost: defineSearchAttributeKey('ImgflowComputeHost', SearchAttributeType.KEYWORD),
  volume: defineSearchAttributeKey('ImgflowVolume', SearchAttributeType.KEYWORD),
  subscription: defineSearchAttributeKey('ImgflowSubscription', SearchAttributeType.KEYWORD),
  state: defineSearchAttributeKey('ImgflowState', SearchAttributeType.KEYWORD),
} as const;

/** `Name=Type` pairs as the Temporal CLI's `--search-attribute` takes them. */
export function searchAttributeFlags(): string[] {
  const cliType: Record<string, string> = { KEYWORD: 'Keyword', KEYWORD_LIST: 'KeywordList' };
  return Object.values(SA).map((key) => `${key.name}=${cliType[key.type]}`);
}
