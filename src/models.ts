/**
 * Embedding models the tool knows: native dimensions, whether `dimensions` may be sent, the name the API answers with,
 * and list prices in US dollars per million input tokens (standard and Batch API). The one model table in the code:
 * the simulator answers from it and the configuration is checked against it. Update it here.
 */
export interface ModelInfo {
  /** The vector length the model produces without `dimensions`, and the largest `dimensions` it takes. */
  nativeDimensions: number;
  /** The model takes a `dimensions` parameter (text-embedding-3 and later). */
  dimensionsParam: boolean;
  /** The `model` field of its answers: ada-002 answers as "text-embedding-ada-002-v2" (recorded). */
  responseModel: string;
  usdPerMTokens: { standard: number; batch: number };
}

export const MODELS: Record<string, ModelInfo> = {
  'text-embedding-3-small': { nativeDimensions: 1536, dimensionsParam: true, responseModel: 'text-embedding-3-small', usdPerMTokens: { standard: 0.02, batch: 0.01 } },
  'text-embedding-3-large': { nativeDimensions: 3072, dimensionsParam: true, responseModel: 'text-embedding-3-large', usdPerMTokens: { standard: 0.13, batch: 0.065 } },
  'text-embedding-ada-002': { nativeDimensions: 1536, dimensionsParam: false, responseModel: 'text-embedding-ada-002-v2', usdPerMTokens: { standard: 0.1, batch: 0.05 } },
};

export const KNOWN_MODELS = Object.keys(MODELS);

export function modelInfo(model: string): ModelInfo | undefined {
  return Object.hasOwn(MODELS, model) ? MODELS[model] : undefined;
}

/**
 * Why `dimensions` cannot be sent with `model` (as the embeddings endpoint would refuse it), or null when it can.
 * Unknown models (an OpenAI-compatible server's own) are not judged.
 */
export function dimensionsProblem(model: string, dimensions: number): string | null {
  const info = modelInfo(model);
  if (!Number.isInteger(dimensions) || dimensions < 1) return 'must be an integer of at least 1';
  if (!info) return null;
  if (!info.dimensionsParam) return `is not supported by ${model} (it always answers with ${info.nativeDimensions} dimensions)`;
  if (dimensions > info.nativeDimensions) return `can be at most ${info.nativeDimensions} for ${model}`;
  return null;
}

export interface CostEstimate {
  batchUsd: number | null;
  realtimeUsd: number | null;
}

export function estimateCost(model: string, tokens: number): CostEstimate {
  const info = modelInfo(model);
  if (!info) return { batchUsd: null, realtimeUsd: null };
  return {
    batchUsd: (tokens / 1e6) * info.usdPerMTokens.batch,
    realtimeUsd: (tokens / 1e6) * info.usdPerMTokens.standard,
  };
}

/** The vector length a model produces under the given config, when it can be known. */
export function expectedDimensions(model: string, dimensions: number | null): number | null {
  return dimensions ?? modelInfo(model)?.nativeDimensions ?? null;
}
