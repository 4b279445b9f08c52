import path from 'node:path';

/** Where things live in a work directory (the seed system's checkpoint dir). */
export function workPaths(workDir: string) {
  return {
    root: workDir,
    state: path.join(workDir, 'state'),
    /** The texts of the distinct strings, appended in id order (see src/store.ts). */
    texts: path.join(workDir, 'texts.jsonl'),
    requests: path.join(workDir, 'requests'),
    results: path.join(workDir, 'results'),
    rejects: path.join(workDir, 'rejects.jsonl'),
    indexRejects: path.join(workDir, 'index_rejects.jsonl'),
  };
}
