import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { buildReport } from '../eval/report.js';
import { writeFileAtomic } from '../util/files.js';
import { stringList } from './lists.js';

export function registerReport(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('report')
    .description('write one self-contained HTML report (charts and tables) from an eval results folder')
    .argument('<dir>', 'results folder: <dataset>__<model>__<press>__<budget>/metrics.json, summary.json, profiles/, needle/, bench/')
    .option('--out <file>', 'HTML file to write (default: <dir>/report.html)')
    .option('--profile <files>', 'comma-separated profile or head-score files to show too (besides <dir>/profiles and those the runs name)')
    .action((dir: string, flags: Flags) => run(async () => reportCommand(dir, flags)));
}

interface Flags { out?: string; profile?: string }

function reportCommand(dir: string, flags: Flags): void {
  const profiles = stringList('--profile', flags.profile, { item: 'file' });
  const out = flags.out ?? path.join(dir, 'report.html');
  const folder = path.dirname(path.resolve(out));
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) throw new CokvError(`--out ${out}: folder ${folder} does not exist`, 'file');
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new CokvError(`--out ${out}: is a folder`, 'file');
  const html = buildReport(dir, { profiles });
  writeFileAtomic(out, html, { what: '--out' });
  process.stderr.write(`wrote ${out} (${(Buffer.byteLength(html) / 1024).toFixed(0)} KiB)\n`);
}
