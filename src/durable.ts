/**
 * What a commit point declares done must be on disk before it is declared: a power cut or kernel crash loses what
 * the page cache held, unlike a killed process. These make a file, and its name in its directory, durable.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import path from 'node:path';

/** Flushes a file's contents, or a directory's entries (a rename or a new file in it), to disk. */
export function fsyncFile(file: string): void {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Renames a file whose contents are already flushed, and flushes the rename. */
export async function renameDurably(from: string, to: string): Promise<void> {
  await rename(from, to);
  fsyncFile(path.dirname(to));
}
