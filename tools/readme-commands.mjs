#!/usr/bin/env node
// Runs the shell commands of README.md as written and says PASS / FAIL / SKIP for each (`npm run test:readme`).
//
// What runs: every command of the ```sh, ```bash, ```shell and ```console fenced blocks (in ```console blocks only
// the lines that start with `$ `). Lines ending in `\` and quotes left open continue onto the next line. Each
// command runs with `bash -o pipefail -c` from a scratch copy of the repository root (a temporary folder whose
// entries are symlinks to the checkout's, with ../shared beside it; results/, runs/ and test-output/ are left out), so
// files the commands write (profile.json, runs/, results/, …) do not land in the checkout; the commands of one block run in order, in the same folder, so a later
// command sees what an earlier one wrote. Every command is bounded by --timeout seconds (default 300).
//
// Conventions in README.md:
//   - `needs: WHAT` in a command's trailing comment, e.g. `cmd --model m.gguf   # needs: your model`, skips that
//     command; in a comment line of its own, e.g. `# On Kubernetes (needs: a cluster): …`, it skips every command
//     below it up to the next blank line. Use it for what a fresh clone with ../shared does not have (your own
//     model, a cluster, Docker, hours of CPU).
//   - `# prints: TEXT` in a trailing comment: the command's output (stdout + stderr) must contain TEXT.
//   - A server (`cokv serve …`) starts in the background: it must print its `# prints:` text (or, without one,
//     stay up) within --timeout seconds; the rest of its block then runs against it, and it is stopped by pid
//     (SIGTERM to its process group) when the block ends.
//   - Commands .ci/run runs itself (npm ci, npm test, npm run lint, npm run test:slurm, npm run test:pack) are
//     skipped here: `npm ci` would replace the node_modules this tool runs from.
//
// Usage: node tools/readme-commands.mjs [--file README.md] [--timeout S] [--only TEXT] [--skip TEXT]… [--keep] [--list]
//   --only TEXT: run only the commands containing TEXT; --skip TEXT: skip those containing it (repeatable);
//   --keep: leave the scratch folder; --list: print the commands found (and their `needs:`) without running them.
// Exit status: 0 when nothing failed, 1 otherwise.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHELL_LANGS = new Set(['sh', 'bash', 'shell', 'console']);
const COVERED_BY_CI = [/^npm ci\b/, /^npm test\b/, /^npm run lint\b/, /^npm run -?s? ?test:slurm\b/, /^npm run test:pack\b/];
const SERVER = /\bcokv serve\b/;
const SELF = /^npm run -?s? ?test:readme\b|readme-commands\.mjs/;
// Not linked into the scratch copy: git's folder, and the output folders commands write into (results/ is tracked:
// `cokv experiment` writing there would change the checkout).
const NOT_LINKED = new Set(['.git', 'results', 'runs', 'test-output']);

function parseArgs(argv) {
  const o = { file: path.join(ROOT, 'README.md'), timeout: 300, only: undefined, skip: [], keep: false, list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--file') o.file = path.resolve(argv[++i]);
    else if (a === '--timeout') o.timeout = Number(argv[++i]);
    else if (a === '--only') o.only = argv[++i];
    else if (a === '--skip') o.skip.push(argv[++i]);
    else if (a === '--keep') o.keep = true;
    else if (a === '--list') o.list = true;
    else { process.stderr.write(`readme-commands: unknown argument '${a}'\n`); process.exit(1); }
  }
  if (!(o.timeout > 0)) { process.stderr.write('readme-commands: --timeout must be a positive number\n'); process.exit(1); }
  return o;
}

/**
 * Scans one line of shell: whether a quote is still open at its end (carried in `state`), and where its comment
 * starts (`#` outside quotes at the start of a word), or -1.
 */
function scanLine(line, state) {
  let comment = -1;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (state.quote) {
      if (c === state.quote) state.quote = null;
      else if (c === '\\' && state.quote === '"') i++;
    } else if (c === '\\') i++;
    else if (c === "'" || c === '"') state.quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]))) { comment = i; break; }
  }
  return comment;
}

/** The commands of README.md: { block, line, text, comment, needs, prints }. */
export function extractCommands(markdown) {
  const lines = markdown.split('\n');
  const commands = [];
  let block = 0;
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w+)?\s*$/.exec(lines[i]);
    if (!open) continue;
    const lang = open[1] ?? '';
    let j = i + 1;
    const body = [];
    while (j < lines.length && !/^```\s*$/.test(lines[j])) body.push({ text: lines[j], n: j + 1 }), j++;
    i = j;
    if (!SHELL_LANGS.has(lang)) continue;
    block++;
    let groupNeeds;
    let cur;
    const state = { quote: null };
    for (const { text: raw, n } of body) {
      let text = raw;
      if (!cur) {
        if (lang === 'console') {
          if (!text.startsWith('$ ')) continue;
          text = text.slice(2);
        }
        if (text.trim() === '') { groupNeeds = undefined; continue; }
        const c = scanLine(text, { quote: null });
        if (c >= 0 && text.slice(0, c).trim() === '') {
          const m = /\bneeds: ([^)\n]+?)(?:\)|$)/.exec(text.slice(c));
          if (m) groupNeeds = m[1].replace(/[:.]\s*$/, '').trim();
          continue;
        }
        cur = { block, line: n, parts: [], comments: [] };
      }
      const c = scanLine(text, state);
      const code = c >= 0 ? text.slice(0, c) : text;
      if (c >= 0) cur.comments.push(text.slice(c + 1).trim());
      const cont = !state.quote && /\\\s*$/.test(code);
      cur.parts.push(cont ? code.replace(/\s*\\\s*$/, '') : code.trimEnd());
      if (state.quote || cont) { if (state.quote) cur.parts[cur.parts.length - 1] += '\n'; continue; }
      const comment = cur.comments.join(' ');
      const needs = /\bneeds: ([^;)]+)/.exec(comment)?.[1].trim() ?? groupNeeds;
      const prints = /\bprints: (.+)$/.exec(comment)?.[1].trim();
      // A `\` continuation joins with one space; a line inside an open quote is kept as it is, after its newline.
      const joined = cur.parts.map((p, k) => (k === 0 || cur.parts[k - 1].endsWith('\n') ? p : ' ' + p.trimStart())).join('');
      commands.push({ block: cur.block, line: cur.line, text: joined.replace(/[ \t]+\n/g, '\n').trim(), needs, prints });
      cur = undefined;
    }
  }
  return commands;
}

/** A scratch copy of the repository root: symlinks to its entries (not .git), and ../shared beside it. */
function makeSandbox(file) {
  // One fixed place per checked file (not mkdtemp), so `npx cokv` finds the npx cache entry it made for this folder
  // last time; a run of the same file still going (its pid in the lock) is not disturbed.
  const key = createHash('sha1').update(`${ROOT}\0${file}`).digest('hex').slice(0, 10);
  const dir = path.join(os.tmpdir(), `cokv-readme-${key}`);
  const lock = `${dir}.lock`;
  try {
    const pid = Number(fs.readFileSync(lock, 'utf8'));
    if (pid > 0 && pid !== process.pid) {
      let alive = true;
      try { process.kill(pid, 0); } catch { alive = false; }
      if (alive) { process.stderr.write(`readme-commands: another run (pid ${pid}) is checking ${file} in ${dir}\n`); process.exit(1); }
    }
  } catch { /* no lock */ }
  fs.writeFileSync(lock, String(process.pid));
  process.on('exit', () => fs.rmSync(lock, { force: true }));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir);
  const repo = path.join(dir, path.basename(ROOT));
  fs.mkdirSync(repo);
  for (const e of fs.readdirSync(ROOT)) if (!NOT_LINKED.has(e)) fs.symlinkSync(path.join(ROOT, e), path.join(repo, e));
  const shared = path.join(ROOT, '..', 'shared');
  if (fs.existsSync(shared)) fs.symlinkSync(fs.realpathSync(shared), path.join(dir, 'shared'));
  return { dir, repo };
}

function start(text, cwd) {
  const child = spawn('bash', ['-o', 'pipefail', '-c', text], { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const p = { child, out: '', exited: null };
  child.stdout.on('data', (d) => { p.out += d; });
  child.stderr.on('data', (d) => { p.out += d; });
  p.done = new Promise((resolve) => {
    child.on('close', (code, signal) => { p.exited = { code, signal }; resolve(p.exited); });
    child.on('error', (e) => { p.out += `readme-commands: ${e.message}\n`; p.exited = { code: 127, signal: null }; resolve(p.exited); });
  });
  return p;
}

function stop(p) {
  if (p.exited) return;
  try { process.kill(-p.child.pid, 'SIGTERM'); } catch { /* already gone */ }
  setTimeout(() => { if (!p.exited) try { process.kill(-p.child.pid, 'SIGKILL'); } catch { /* gone */ } }, 3000).unref();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function runOne(cmd, cwd, timeoutS) {
  const p = start(cmd.text, cwd);
  const t0 = Date.now();
  if (SERVER.test(cmd.text)) {
    // Up when it prints its text (or, without one, still running after 5 s); a server that exits has failed.
    while (!p.exited && Date.now() - t0 < timeoutS * 1000) {
      if (cmd.prints ? p.out.includes(cmd.prints) : Date.now() - t0 > 5000) return { ok: true, server: p, ms: Date.now() - t0 };
      await sleep(100);
    }
    stop(p);
    await p.done;
    return { ok: false, why: p.exited?.signal ? `not up within ${timeoutS}s` : `exited with ${p.exited?.code} before it was up`, out: p.out, ms: Date.now() - t0 };
  }
  const timer = setTimeout(() => stop(p), timeoutS * 1000);
  const { code, signal } = await p.done;
  clearTimeout(timer);
  const ms = Date.now() - t0;
  if (signal) return { ok: false, why: `timed out after ${timeoutS}s`, out: p.out, ms };
  if (code !== 0) return { ok: false, why: `exit status ${code}`, out: p.out, ms };
  if (cmd.prints && !p.out.includes(cmd.prints)) return { ok: false, why: `output lacks '${cmd.prints}'`, out: p.out, ms };
  return { ok: true, ms };
}

const tail = (s, n = 15) => s.trimEnd().split('\n').slice(-n).map((l) => `      | ${l}`).join('\n');
const short = (s) => { const one = s.replace(/\s*\n\s*/g, ' '); return one.length > 110 ? one.slice(0, 107) + '...' : one; };

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let commands = extractCommands(fs.readFileSync(o.file, 'utf8'));
  if (o.only) commands = commands.filter((c) => c.text.includes(o.only));
  if (o.list) {
    for (const c of commands) console.log(`${path.basename(o.file)}:${c.line}${c.needs ? ` [needs: ${c.needs}]` : ''}\n  ${c.text.replace(/\n/g, '\n  ')}`);
    return 0;
  }
  const box = makeSandbox(o.file);
  const counts = { PASS: 0, FAIL: 0, SKIP: 0 };
  const t0 = Date.now();
  let servers = [];
  let lastBlock = 0;
  const endBlock = async () => { for (const s of servers) { stop(s); await s.done; } servers = []; };
  process.on('SIGINT', () => { for (const s of servers) stop(s); process.exit(130); });
  try {
    for (const cmd of commands) {
      if (cmd.block !== lastBlock) { await endBlock(); lastBlock = cmd.block; }
      const where = `${path.basename(o.file)}:${cmd.line}`;
      let skip = cmd.needs ? `needs: ${cmd.needs}` : undefined;
      if (!skip && COVERED_BY_CI.some((r) => r.test(cmd.text))) skip = 'run by .ci/run';
      if (!skip && SELF.test(cmd.text)) skip = 'this check itself';
      if (!skip && o.skip.some((t) => cmd.text.includes(t))) skip = '--skip';
      if (skip) {
        counts.SKIP++;
        console.log(`SKIP ${where}  ${short(cmd.text)}  (${skip})`);
        continue;
      }
      const r = await runOne(cmd, box.repo, o.timeout);
      if (r.server) servers.push(r.server);
      counts[r.ok ? 'PASS' : 'FAIL']++;
      const secs = `${(r.ms / 1000).toFixed(1)}s`;
      console.log(`${r.ok ? 'PASS' : 'FAIL'} ${where}  ${short(cmd.text)}  (${r.ok ? (r.server ? `server up in ${secs}` : secs) : `${r.why}, ${secs}`})`);
      if (!r.ok) console.log(tail(r.out));
    }
    await endBlock();
  } finally {
    if (o.keep) console.log(`(scratch folder kept: ${box.repo})`);
    else fs.rmSync(box.dir, { recursive: true, force: true });
  }
  console.log(`readme-commands: ${counts.PASS} passed, ${counts.FAIL} failed, ${counts.SKIP} skipped (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
  return counts.FAIL > 0 ? 1 : 0;
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 2; });
}
