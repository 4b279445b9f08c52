/**
 * Validation of a Batch API input file for /v1/embeddings, as OpenAI does it: line and size caps, JSON lines, url
 * equal to the endpoint, unique custom_ids, one model, non-empty inputs, token caps. Streams the file; the only thing
 * held is the set of custom_ids, at most 50,000 of them.
 */
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

export const LIMITS = {
  maxLines: 50_000,
  maxBytes: 209_715_200,
  maxInputsPerBatch: 50_000,
  maxTokensPerInput: 8192,
  maxInputsPerRequest: 2048,
  maxTokensPerRequest: 300_000,
};

export interface BatchError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}

export interface Validation {
  errors: BatchError[];
  lines: number;
  inputs: number;
  tokens: number;
  model: string | undefined;
}

const asText = { disallowedSpecial: new Set<string>() };

/** Validates one request body for /v1/embeddings; returns the error and the token count. */
export function validateEmbeddingBody(body: unknown): { error?: { code: string; message: string; param: string }; inputs: string[]; tokens: number[] } {
  const b = body as { model?: unknown; input?: unknown; encoding_format?: unknown; dimensions?: unknown } | null;
  if (!b || typeof b !== 'object') return { error: { code: 'invalid_request', message: 'The body must be a JSON object.', param: 'body' }, inputs: [], tokens: [] };
  if (typeof b.model !== 'string' || !b.model) return { error: { code: 'missing_required_parameter', message: "Missing required parameter: 'model'.", param: 'model' }, inputs: [], tokens: [] };
  const inputs = typeof b.input === 'string' ? [b.input] : Array.isArray(b.input) && b.input.every((s) => typeof s === 'string') ? (b.input as string[]) : undefined;
  if (!inputs || inputs.length === 0) return { error: { code: 'invalid_type', message: "'input' must be a string or a non-empty array of strings.", param: 'input' }, inputs: [], tokens: [] };
  if (inputs.length > LIMITS.maxInputsPerRequest) return { error: { code: 'invalid_value', message: `'input' has ${inputs.length} entries; at most ${LIMITS.maxInputsPerRequest} are allowed.`, param: 'input' }, inputs, tokens: [] };
  if (b.encoding_format !== undefined && b.encoding_format !== 'float' && b.encoding_format !== 'base64')
    return { error: { code: 'invalid_value', message: "'encoding_format' must be 'float' or 'base64'.", param: 'encoding_format' }, inputs, tokens: [] };
  const tokens: number[] = [];
  let total = 0;
  for (const [i, text] of inputs.entries()) {
    if (text === '') return { error: { code: 'invalid_value', message: `'input[${i}]' is empty; empty strings are not allowed.`, param: 'input' }, inputs, tokens };
    const n = countTokens(text, asText);
    if (n > LIMITS.maxTokensPerInput)
      return { error: { code: 'context_length_exceeded', message: `This model's maximum context length is ${LIMITS.maxTokensPerInput} tokens, however you requested ${n} tokens in input ${i}.`, param: 'input' }, inputs, tokens };
    tokens.push(n);
    total += n;
  }
  if (total > LIMITS.maxTokensPerRequest)
    return { error: { code: 'max_tokens_per_request', message: `Requested ${total} tokens, max ${LIMITS.maxTokensPerRequest} tokens per request.`, param: 'input' }, inputs, tokens };
  return { inputs, tokens };
}

export async function validateBatchFile(file: string, bytes: number, endpoint: string): Promise<Validation> {
  const v: Validation = { errors: [], lines: 0, inputs: 0, tokens: 0, model: undefined };
  const fail = (code: string, message: string, line: number | null, param: string | null = null) => {
    if (v.errors.length < 10) v.errors.push({ code, message, param, line });
  };
  if (bytes > LIMITS.maxBytes) {
    fail('file_too_large', `The input file is ${bytes} bytes; the maximum is ${LIMITS.maxBytes}.`, null);
    return v;
  }
  const ids = new Set<string>();
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const text of lines) {
    if (!text.trim()) continue;
    const lineNo = ++v.lines;
    if (v.lines > LIMITS.maxLines) {
      fail('too_many_requests', `The batch input file has more than ${LIMITS.maxLines} requests.`, lineNo);
      break;
    }
    let line: { custom_id?: unknown; method?: unknown; url?: unknown; body?: unknown };
    try {
      line = JSON.parse(text);
    } catch {
      fail('invalid_json_line', `Line ${lineNo} is not valid JSON.`, lineNo);
      continue;
    }
    if (typeof line.custom_id !== 'string' || !line.custom_id) fail('missing_required_parameter', "Missing required parameter: 'custom_id'.", lineNo, 'custom_id');
    else if (ids.has(line.custom_id)) fail('duplicate_custom_id', `The custom_id '${line.custom_id}' is used more than once in this batch.`, lineNo, 'custom_id');
    else ids.add(line.custom_id);
    if (line.method !== 'POST') fail('invalid_method', `Line ${lineNo}: method must be POST.`, lineNo, 'method');
    if (line.url !== endpoint) fail('mismatched_endpoint', `Line ${lineNo}: url '${String(line.url)}' does not match the batch endpoint '${endpoint}'.`, lineNo, 'url');
    const checked = validateEmbeddingBody(line.body);
    if (checked.error) fail(checked.error.code, `Line ${lineNo}: ${checked.error.message}`, lineNo, `body.${checked.error.param}`);
    const model = (line.body as { model?: string } | undefined)?.model;
    if (model !== undefined) {
      if (v.model === undefined) v.model = model;
      else if (model !== v.model) fail('mismatched_model', `Line ${lineNo}: model '${model}' differs from '${v.model}'; a batch uses one model.`, lineNo, 'body.model');
    }
    v.inputs += checked.inputs.length;
    v.tokens += checked.tokens.reduce((a, b) => a + b, 0);
  }
  if (v.inputs > LIMITS.maxInputsPerBatch) fail('too_many_inputs', `The batch has ${v.inputs} embedding inputs; at most ${LIMITS.maxInputsPerBatch} are allowed.`, null);
  if (v.lines === 0) fail('empty_file', 'The batch input file is empty.', null);
  return v;
}
