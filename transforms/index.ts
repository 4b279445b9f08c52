/**
 * embatch's stages (`import { ... } from 'embatch/transforms'`), each a factory returning a Node stream, to compose
 * with `stream.pipeline`. Most stages move batches (arrays) of records, not single records: `batchItems(n)` groups a
 * stream of single items into arrays of n.
 *
 * Ingest (what `prepare` runs):
 *   bytes --countBytes--> bytes --decodeText--> text --parseCsv--> CsvRecord --batchItems--> CsvRecord[]
 *   --extractStrings--> ExtractedBatch --aggregateStrings--> DistinctBatch --dedupStrings(store)--> NewString[]
 *   --countTokens--> --guardTokens--> NewString[] --formatRequests--> RequestBatch --writeRequestFiles(store)
 *
 * Results (what `index` and `replay` run):
 *   bytes --parseResults--> ParsedLine[] --decodeResults--> DecodedBatch --buildObjects(store)--> EntityObject[]
 *   --upsertWeaviate(writer) | writeObjectsJsonl(stream)
 *
 * Vectors made elsewhere go straight to the last stages: `entityObject(text, field, vector)` gives an object the ids
 * the pipeline would give it.
 */
export { batchItems, tapBatches, BATCH_STREAM } from './batch-items.js';
export { countBytes } from './count-bytes.js';
export { decodeText } from './decode-text.js';
export { parseCsv, type ParseCsvOptions, type RejectedRow } from './parse-csv.js';
export { extractStrings, type ExtractOptions, type ExtractedBatch } from './extract-strings.js';
export { aggregateStrings, type DistinctBatch } from './aggregate-strings.js';
export { dedupStrings, type DedupOptions, type DedupStore } from './dedup-strings.js';
export { countTokens, type CountTokensOptions } from './count-tokens.js';
export { guardTokens, truncateToTokens, type GuardOptions } from './guard-tokens.js';
export { formatRequests, parseCustomId, type RequestBatch, type RequestBodyOptions, type RequestItem } from './format-requests.js';
export { writeRequestFiles, BATCH_MAX_LINES, type RequestFileStore, type WriteRequestFilesOptions } from './write-request-files.js';
export { parseResults, type ParsedLine } from './parse-results.js';
export { decodeResults, toVector, type DecodedBatch, type DecodedResult, type FailedLine } from './decode-results.js';
export { buildObjects, entityObject, hashValue, objectUuid, type BuildObjectsOptions, type EntityObject, type ObjectStore } from './build-objects.js';
export { upsertWeaviate, newUpsertCounters, type UpsertCounters, type UpsertOptions, type ObjectWriter } from './upsert-weaviate.js';
export { writeObjectsJsonl, float32ToBase64 } from './write-objects-jsonl.js';
export type { CsvRecord, IngestCounters, NewString } from '../src/types.js';
export type { EntityProperties } from '../src/weaviate.js';
