import { once } from 'node:events';
import { Writable } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import type { EntityObject } from './build-objects.js';

/**
 * The second sink: the same objects Weaviate would get, one JSON line each ({uuid, properties, vector}), to a file or
 * stdout, for other tools and for a first run without Weaviate. Honours the target's backpressure.
 */
export function writeObjectsJsonl(out: NodeJS.WritableStream, onWritten: (objects: EntityObject[]) => Promise<void>): Writable {
  return new Writable({
    ...BATCH_STREAM,
    write(objects: EntityObject[], _enc, callback) {
      let text = '';
      for (const o of objects) text += `{"uuid":${JSON.stringify(o.uuid)},"properties":${JSON.stringify(o.properties)},"vector":[${o.vector.join(',')}]}\n`;
      const ok = out.write(text);
      const done = ok ? Promise.resolve() : once(out as unknown as NodeJS.EventEmitter, 'drain').then(() => undefined);
      done.then(() => onWritten(objects)).then(() => callback(), callback);
    },
  });
}
