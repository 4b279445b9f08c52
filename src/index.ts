/**
 * The `embatch` package: the commands as functions (see api.ts), the Weaviate connection and collection, and the
 * state store for stages that need one. The stages are in `embatch/transforms`.
 */
export * from './api.js';
export { connectWeaviate, ensureCollection, type EntityProperties } from './weaviate.js';
export { openObjectWriter, type WeaviateObjectWriter } from './weaviate-writer.js';
export { StateStore } from './store.js';
export { newCounters } from './types.js';
