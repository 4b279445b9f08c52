import { once } from 'node:events';
import { endianness } from 'node:os';
import { Writable } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import type { EntityObject } from './build-objects.js';

/**
 * The second sink: the same objects Weaviate would get, one JSON line each ({uuid, properties, vector}), to a file or
 * stdout, for other tools and for a first run without Weaviate. Honours the target's backpressure.
 *
 * The vector is written in the configured encoding_format: base64 of little-endian float32 (as OpenAI sends it; the
 * default), or a float array. Printing 1,536 floats as text costs more than everything else per object together.
 */
export function writeObjectsJsonl(out: NodeJS.WritableStream, format: 'float' | 'base64', onWritten: (objects: EntityObject[]) => Promise<void>): Writable {
  const vectorText = format === 'base64' ? (o: EntityObject) => `"${o.vectorBase64 ?? float32ToBase64(o.vector)}"` : (o: EntityObject) => `[${o.vector.join(',')}]`;
  return new Writable({
    ...BATCH_STREAM,
    write(objects: EntityObject[], _enc, callback) {
      // A batch becomes one buffer, each part written into it once: cheaper than a string per line (each converted
      // again on write) or one string for the batch (measured twice as slow).
      const parts: string[] = [];
      let bytes = 0;
      for (const o of objects) {
        const head = `{"uuid":"${o.uuid}","properties":${JSON.stringify(o.properties)},"vector":`;
        const vector = vectorText(o);
        parts.push(head, vector);
        bytes += Buffer.byteLength(head) + vector.length + 2; // the vector text is ASCII
      }
      const buf = Buffer.allocUnsafe(bytes);
      let at = 0;
      for (let i = 0; i < parts.length; i += 2) {
        at += buf.write(parts[i]!, at, 'utf8');
        at += buf.write(parts[i + 1]!, at, 'latin1');
        at += buf.write('}\n', at, 'latin1');
      }
      const done = out.write(buf) ? Promise.resolve() : once(out as unknown as NodeJS.EventEmitter, 'drain').then(() => undefined);
      done.then(() => onWritten(objects)).then(() => callback(), callback);
    },
  });
}

const littleEndian = endianness() === 'LE';

/** Little-endian float32 bytes in base64. */
export function float32ToBase64(v: Float32Array): string {
  if (littleEndian) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
  const buf = Buffer.allocUnsafe(v.length * 4);
  for (let i = 0; i < v.length; i++) buf.writeFloatLE(v[i]!, i * 4);
  return buf.toString('base64');
}
