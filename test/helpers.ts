import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests resolve shared assets from here). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** `../shared/assets` beside the repo. */
export const assetsDir = path.resolve(repoRoot, '../shared/assets');
export const haveAssets = fs.existsSync(assetsDir);
if (!haveAssets) console.warn(`[cokv tests] ${assetsDir} is absent: tests that need shared assets are skipped`);

export function asset(...parts: string[]): string {
  return path.join(assetsDir, ...parts);
}

/** A fresh temporary directory under the system temp folder. */
export function tmpDir(prefix = 'cokv-test-'): string {
  return fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), prefix));
}
