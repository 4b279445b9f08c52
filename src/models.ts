/**
 * Embedding models the tool knows: default dimensions, whether `dimensions` may be sent, and list prices in US dollars
 * per million input tokens (standard and Batch API). The one price table in the code; update it here.
 */
export interface ModelInfo {
  defaultDimensions: number;
  dimensionsParam: boolean;
  usdPerMTokens: { standard: number; batch: number };
}

export const MODELS: Record<string, ModelInfo> = {
  'text-embedding-3-small': { defaultDimensions: 1536, dimensionsParam: true, usdPerMTokens: { standard: 0.02, batch: 0.01 } },
  'text-embedding-3-large': { defaultDimensions: 3072, dimensionsParam: true, usdPerMTokens: { standard: 0.13, batch: 0.065 } },
  'text-embedding-ada-002': { defaultDimensions: 1536, dimensionsParam: false, usdPerMTokens: { standard: 0.1, batch: 0.05 } },
};

export interface CostEstimate {
  batchUsd: number | null;
  realtimeUsd: number | null;
}

export function estimateCost(model: string, tokens: number): CostEstimate {
  const info = MODELS[model];
  if (!info) return { batchUsd: null, realtimeUsd: null };
  return {
    batchUsd: (tokens / 1e6) * info.usdPerMTokens.batch,
    realtimeUsd: (tokens / 1e6) * info.usdPerMTokens.standard,
  };
}

/** The vector length a model produces under the given config, when it can be known. */
export function expectedDimensions(model: string, dimensions: number | null): number | null {
  return dimensions ?? MODELS[model]?.defaultDimensions ?? null;
}
