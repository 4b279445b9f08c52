/**
 * What the simulator accepts, as OpenAI does (`../shared/notes/openai-batch.md` section 5 and the published OpenAPI
 * description): one request body for /v1/embeddings, and a Batch API input file. Answers marked "recorded" are the
 * exact text of a captured real answer; the others follow the OpenAPI description, and where its wording is not known
 * the comment says so and the closest documented form is used.
 *
 * A batch input file is checked as a file (line and size caps, JSON lines, url equal to the endpoint, unique
 * custom_ids, one model that exists): any of those fails the whole batch. A line whose body the endpoint would refuse
 * (an empty input, too many tokens, dimensions the model does not take, an unknown parameter) does not: it becomes a
 * 400 line in the error file, as recorded for real batches. Streams the file; the only things held are the custom_ids
 * (at most 50,000) and the numbers of the lines whose bodies are refused.
 */
import { countTokens, decode } from 'gpt-tokenizer/encoding/cl100k_base';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { dimensionsProblem, modelInfo } from '../models.js';

export const LIMITS = {
  maxLines: 50_000,
  maxBytes: 209_715_200,
  maxInputsPerBatch: 50_000,
  maxTokensPerInput: 8192,
  maxInputsPerRequest: 2048,
  maxTokensPerRequest: 300_000,
};

/** The body parameters /v1/embeddings takes (CreateEmbeddingRequest, additionalProperties: false). */
const EMBEDDING_PARAMS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user']);

/** An answer the endpoint gives instead of embeddings: HTTP status and OpenAI's error object. */
export interface ApiErrorSpec {
  status: number;
  message: string;
  type: string;
  code: string | null;
  param: string | null;
}

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
  /** 0-based numbers of the lines whose body the endpoint refuses (they end as 400 lines in the error file). */
  refused: number[];
}

export interface CheckedBody {
  error?: ApiErrorSpec;
  /** The texts to embed (token-id inputs decoded to their text). */
  inputs: string[];
  tokens: number[];
}

const asText = { disallowedSpecial: new Set<string>() };
const invalid = (message: string, param: string | null = null, code: string | null = null, status = 400): ApiErrorSpec => ({ status, message, type: 'invalid_request_error', code, param });

/** The error /v1/embeddings gives for a model it does not have (recorded). */
export function modelNotFound(model: string): ApiErrorSpec {
  return invalid(`The model \`${model}\` does not exist or you do not have access to it.`, null, 'model_not_found', 404);
}

/** Validates one request body for /v1/embeddings: the error the endpoint would answer, or the inputs and their tokens. */
export function validateEmbeddingBody(body: unknown): CheckedBody {
  const none = (error: ApiErrorSpec): CheckedBody => ({ error, inputs: [], tokens: [] });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return none(invalid('We could not parse the JSON body of your request.'));
  const b = body as Record<string, unknown>;
  // Recorded: "Unrecognized request argument supplied: foo", code null.
  const unknown = Object.keys(b).find((k) => !EMBEDDING_PARAMS.has(k));
  if (unknown !== undefined) return none(invalid(`Unrecognized request argument supplied: ${unknown}`));
  // Wording not verified; the parameter is required by the OpenAPI description.
  if (typeof b.model !== 'string' || !b.model) return none(invalid('you must provide a model parameter', 'model'));
  const info = modelInfo(b.model);
  if (!info) return none(modelNotFound(b.model));
  const inputs = readInputs(b.input);
  if (typeof inputs === 'string') return none(invalid(inputs, 'input'));
  if (b.encoding_format !== undefined && b.encoding_format !== 'float' && b.encoding_format !== 'base64')
    return none(invalid(`Invalid value: '${String(b.encoding_format)}'. Supported values are: 'float' and 'base64'.`, 'encoding_format', 'invalid_value'));
  if (b.user !== undefined && typeof b.user !== 'string') return none(invalid(`Invalid type for 'user': expected a string, but got ${typeName(b.user)} instead.`, 'user', 'invalid_type'));
  if (b.dimensions !== undefined && b.dimensions !== null) {
    // Recorded for ada-002: "This model does not support specifying dimensions."; the other wordings are not verified
    // (the OpenAPI description says: an integer, minimum 1, text-embedding-3 and later models only).
    if (!info.dimensionsParam) return none(invalid('This model does not support specifying dimensions.', 'dimensions'));
    if (typeof b.dimensions !== 'number' || !Number.isInteger(b.dimensions)) return none(invalid(`Invalid type for 'dimensions': expected an integer, but got ${typeName(b.dimensions)} instead.`, 'dimensions', 'invalid_type'));
    const problem = dimensionsProblem(b.model, b.dimensions);
    if (problem) return none(invalid(`Invalid value for 'dimensions': ${b.dimensions} ${problem}.`, 'dimensions', 'invalid_value'));
  }
  const tokens: number[] = [];
  let total = 0;
  for (const input of inputs) {
    const n = typeof input === 'string' ? countTokens(input, asText) : input.length;
    if (n > LIMITS.maxTokensPerInput)
      // Recorded, with its odd punctuation.
      return { error: invalid(`This model's maximum context length is ${LIMITS.maxTokensPerInput} tokens, however you requested ${n} tokens (${n} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`), inputs: [], tokens };
    tokens.push(n);
    total += n;
  }
  // Recorded (LangChain PR #33668): "Requested 673477 tokens, max 300000 tokens per request".
  if (total > LIMITS.maxTokensPerRequest) return { error: invalid(`Requested ${total} tokens, max ${LIMITS.maxTokensPerRequest} tokens per request`, null, 'max_tokens_per_request'), inputs: [], tokens };
  return { inputs: inputs.map((i) => (typeof i === 'string' ? i : tokenText(i))), tokens };
}

/**
 * The inputs of a body: a string, an array of strings, an array of token ids, or an array of token-id arrays (all four
 * legal per the OpenAPI description, at most 2,048 entries), or why they are not. Wordings not verified.
 */
function readInputs(input: unknown): Array<string | number[]> | string {
  if (input === undefined) return "Missing required parameter: 'input'.";
  if (typeof input === 'string') return input === '' ? "'$.input' is invalid: an input cannot be an empty string." : [input];
  if (!Array.isArray(input) || input.length === 0) return "'$.input' is invalid: expected a string or a non-empty array of strings or token ids.";
  if (input.length > LIMITS.maxInputsPerRequest) return `'$.input' is invalid: ${input.length} entries, at most ${LIMITS.maxInputsPerRequest} are allowed.`;
  if (input.every(isTokenId)) return [input as number[]];
  const out: Array<string | number[]> = [];
  for (const [i, item] of input.entries()) {
    if (typeof item === 'string') {
      if (item === '') return `'$.input[${i}]' is invalid: an input cannot be an empty string.`;
      out.push(item);
    } else if (Array.isArray(item) && item.length > 0 && item.every(isTokenId)) out.push(item as number[]);
    else return `'$.input[${i}]' is invalid: expected a string or an array of token ids.`;
  }
  return out;
}

const isTokenId = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 0;
const typeName = (x: unknown) => (x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x === 'number' ? 'a number' : `a ${typeof x}`);

/** The text of token ids (so a string and its tokens get the same vector); ids outside the vocabulary hash as they are. */
function tokenText(ids: number[]): string {
  try {
    return decode(ids);
  } catch {
    return `tokens:${ids.join(',')}`;
  }
}

/**
 * Validates a Batch API input file as a file. Error codes: `invalid_url` and `model_not_found` (param "body.model",
 * with the line) are recorded; the others (invalid_json_line, duplicate_custom_id, mismatched_model, ...) are the
 * names OpenAI-compatible servers use, not verified against OpenAI.
 */
export async function validateBatchFile(file: string, bytes: number, endpoint: string): Promise<Validation> {
  const v: Validation = { errors: [], lines: 0, inputs: 0, tokens: 0, model: undefined, refused: [] };
  const fail = (code: string, message: string, line: number | null, param: string | null = null) => {
    if (v.errors.length < 10) v.errors.push({ code, message, param, line });
  };
  if (bytes > LIMITS.maxBytes) {
    fail('file_too_large', `The batch input file is larger than the ${LIMITS.maxBytes} maximum.`, null);
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
      fail('invalid_json_line', 'This line is not parseable as valid JSON.', lineNo);
      continue;
    }
    if (typeof line.custom_id !== 'string' || !line.custom_id) fail('missing_required_parameter', "Missing required parameter: 'custom_id'.", lineNo, 'custom_id');
    else if (ids.has(line.custom_id)) fail('duplicate_custom_id', 'The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each individual request in a batch.', lineNo, 'custom_id');
    else ids.add(line.custom_id);
    if (line.method !== 'POST') fail('invalid_method', `The method '${String(line.method)}' is not supported; use POST.`, lineNo, 'method');
    if (line.url !== endpoint) fail('invalid_url', `The URL provided for this request does not match the batch endpoint '${endpoint}'.`, lineNo, 'url');
    const model = (line.body as { model?: unknown } | undefined)?.model;
    if (typeof model === 'string') {
      if (v.model === undefined) {
        v.model = model;
        if (!modelInfo(model)) fail('model_not_found', modelNotFound(model).message, lineNo, 'body.model');
      } else if (model !== v.model) fail('mismatched_model', `The model '${model}' differs from the model '${v.model}' of the first line; a batch uses one model.`, lineNo, 'body.model');
    }
    const checked = validateEmbeddingBody(line.body);
    if (checked.error) {
      // The body is the endpoint's business: its line fails with a 400 in the error file, the batch goes on.
      if (checked.error.code !== 'model_not_found') v.refused.push(lineNo - 1);
      continue;
    }
    v.inputs += checked.inputs.length;
    v.tokens += checked.tokens.reduce((a, b) => a + b, 0);
  }
  if (v.inputs > LIMITS.maxInputsPerBatch) fail('too_many_inputs', `The batch has ${v.inputs} embedding inputs; at most ${LIMITS.maxInputsPerBatch} are allowed.`, null);
  if (v.lines === 0) fail('empty_file', 'The batch input file is empty.', null);
  return v;
}
