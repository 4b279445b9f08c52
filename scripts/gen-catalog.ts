/**
 * Writes a catalog-shaped CSV (the seed's 13 columns, a quoted multi-line `composite`, literal NaN for missing
 * values, about 30% of rows repeating an earlier person/title/roles) to a file or stdout. Deterministic for a seed.
 *
 *   node dist/scripts/gen-catalog.js <rows> [file] [--seed N] [--offset N]
 *
 * --offset starts the row numbering (and the text derived from it) elsewhere, for "N new rows" test data.
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Writable } from 'node:stream';

const FIRST = ['Anna', 'Bernard', 'Chloé', 'Dmitri', 'Elif', 'František', 'Greta', 'Håkon', 'Ines', 'Jürgen', 'Kenji', 'Lena', 'Mateo', 'Nadia', 'Oskar', 'Priya', 'Quentin', 'Rosa', 'Søren', 'Tomasz', 'Ulla', 'Viktor', 'Wanda', 'Xavier', 'Yusuf', 'Zofia'];
const LAST = ['Ibsen', 'Proust', 'Dvořák', 'Lagerlöf', 'Sibelius', 'Austen', 'Mahler', 'Chopin', 'Woolf', 'Márquez', 'Schumann', 'Grieg', 'Nielsen', 'Kafka', 'Tolstoy', 'Verdi', 'Brontë', 'Hugo', 'Mann', 'Rilke', 'Sand', 'Janáček', 'Bartók', 'Kodály', 'Ravel'];
const WORDS = ['river', 'journey', 'history', 'war', 'silence', 'sea', 'city', 'garden', 'light', 'lost', 'essays', 'night', 'winter', 'stories', 'time', 'north', 'songs', 'letters', 'peace', 'collected', 'symphony', 'dances', 'poems', 'memoir'];
const ROLES = ['Author', 'Composer', 'Editor', 'Translator', 'Illustrator', 'Author|Translator', 'Contributor'];
const SUBJECTS = ['Law', 'History', 'Philosophy', 'Music', 'Poetry', 'Norway', 'Fiction', 'Travel', 'Art', 'Religion', 'Science', 'Drama'];
const GENRES = ['Poetry', 'Fiction', 'Scores', 'Drama', 'Biography', 'NaN'];

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const quote = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
export const CATALOG_HEADER = 'identity,composite,marcKey,person,roles,title,attribution,provision,subjects,genres,relatedWork,recordId,personId';

export async function writeCatalog(out: Writable, rows: number, seed = 0x9e3779b9, offset = 0): Promise<void> {
  const rnd = mulberry32(seed + offset);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const pool: Array<[string, string, string]> = [];
  let chunk = offset === 0 ? CATALOG_HEADER + '\n' : '';
  for (let i = offset; i < offset + rows; i++) {
    let person: string;
    let title: string;
    let roles: string;
    if (pool.length > 100 && rnd() < 0.3) [person, title, roles] = pick(pool);
    else {
      person = `${pick(LAST)}, ${pick(FIRST)} ${1800 + Math.floor(rnd() * 200)}-`;
      const n = 3 + Math.floor(rnd() * 6);
      const words = Array.from({ length: n }, () => pick(WORDS));
      title = `${words[0]![0]!.toUpperCase()}${words[0]!.slice(1)} ${words.slice(1).join(' ')} / ${i}`;
      roles = pick(ROLES);
      if (pool.length < 200_000) pool.push([person, title, roles]);
      else pool[Math.floor(rnd() * pool.length)] = [person, title, roles];
    }
    const subjects = rnd() < 0.15 ? 'NaN' : `${pick(SUBJECTS)} -- ${pick(SUBJECTS)} -- ${pick(SUBJECTS)}`;
    const genres = pick(GENRES);
    const provision = rnd() < 0.1 ? 'NaN' : `${pick(['Oslo', 'Leipzig', 'London', 'Paris', 'Praha'])} : ${pick(LAST)} & Co., ${1850 + Math.floor(rnd() * 170)}`;
    const composite = [`${roles}: ${person}`, `Title: ${title}`, subjects === 'NaN' ? '' : `Subjects: ${subjects}`, genres === 'NaN' ? '' : `Genres: ${genres}`, provision === 'NaN' ? '' : `Provision information: ${provision}`]
      .filter(Boolean)
      .join('\n');
    chunk += [String(i % 997), quote(composite), quote(`7001 $a${person}`), quote(person), quote(roles), quote(title), 'NaN', quote(provision), quote(subjects), genres, 'NaN', `r${i}`, `r${i}#Agent700-${i % 7}`].join(',') + '\n';
    if (chunk.length > 1 << 16) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  if (chunk) out.write(chunk);
}

async function cli(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string, dflt: number) => {
    const i = args.indexOf(name);
    if (i === -1) return dflt;
    const v = Number(args[i + 1]);
    args.splice(i, 2);
    return v;
  };
  const seed = flag('--seed', 0x9e3779b9);
  const offset = flag('--offset', 0);
  const rows = Number(args[0] ?? 1_000_000);
  const out = args[1] ? createWriteStream(args[1]) : process.stdout;
  await writeCatalog(out, rows, seed, offset);
  if (out !== process.stdout) await new Promise<void>((resolve) => out.end(() => resolve()));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await cli();
