/**
 * Request files from records that are not a CSV: here an async generator standing in for a database cursor or an
 * NDJSON export. The values of embed_fields are taken by name; null or missing means no value. Counts are kept under
 * the source name, so preparing the same source again replaces its counts instead of adding to them.
 *
 *   node prepare-from-records.js <work-dir>
 */
import { defineConfig, prepare, type SourceRecord } from 'embatch';

const workDir = process.argv[2] ?? './embatch-work';
const config = defineConfig({ work_dir: workDir, embed_fields: ['title', 'person'] });

async function* records(): AsyncGenerator<SourceRecord> {
  for (let i = 0; i < 1000; i++) yield { id: String(i), title: `Symphony No. ${i % 100}`, person: i % 3 === 0 ? null : `Composer ${i % 7}` };
}

const summary = await prepare(config, { records: records(), sourceName: 'catalog-db' });
console.log(JSON.stringify(summary));
