// Every `--help` ends with an Examples block (src/cli/examples.ts); the commands are found from the help itself.
import { describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { EXAMPLES } from '../src/cli/examples.js';

async function help(path: string[]): Promise<string> {
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  try {
    expect(await main([...path, '--help'])).toBe(0);
  } finally {
    spy.mockRestore();
  }
  return out;
}

/** The subcommand names listed under "Commands:" (commander puts the name first on an indented line). */
function subcommands(text: string): string[] {
  const i = text.indexOf('\nCommands:\n');
  if (i < 0) return [];
  const names: string[] = [];
  for (const line of text.slice(i + 11).split('\n')) {
    if (line.trim() === '' || !line.startsWith('  ')) break;
    const m = /^ {2}([a-z][\w-]*)/.exec(line);
    if (m && m[1] !== 'help') names.push(m[1]);
  }
  return names;
}

describe('--help', () => {
  it('every command has an Examples block with cokv invocations', async () => {
    const seen: string[] = [];
    const visit = async (path: string[]): Promise<void> => {
      const text = await help(path);
      seen.push(path.join(' '));
      expect(text, `cokv ${path.join(' ')} --help`).toMatch(/\nExamples:\n {2}\$ cokv /);
      for (const sub of subcommands(text)) await visit([...path, sub]);
    };
    await visit([]);
    // The commands the task names, so the discovery above cannot silently find none.
    for (const c of ['generate', 'inspect', 'score', 'profile', 'profile run', 'profile merge', 'eval', 'eval merge', 'needle',
      'bench', 'experiment', 'head-scores', 'report', 'gen-retrieval', 'serve', 'chat']) expect(seen).toContain(c);
    // No example left for a command that is gone.
    for (const key of Object.keys(EXAMPLES)) expect(seen).toContain(key);
  }, 30_000);

  it('examples name only real flags of their command', async () => {
    for (const [key, list] of Object.entries(EXAMPLES)) {
      let text = (await help(key ? key.split(' ') : [])).split('\nExamples:\n')[0];
      // `cokv profile …` and `cokv eval …` run their default subcommand `run`: its flags count too.
      if (subcommands(text).includes('run')) text += (await help([...key.split(' '), 'run'])).split('\nExamples:\n')[0];
      for (const ex of list) {
        const words = ex.split(/\s+/);
        // Only check flags of this command's own examples (a parent's example may call a subcommand).
        if (!key || words.slice(1, 1 + key.split(' ').length).join(' ') !== key) continue;
        for (const flag of ex.replace(/#.*$/, '').match(/(?<=\s)--[a-z][\w-]*/g) ?? []) {
          expect(text, `${flag} in the example of cokv ${key}`).toMatch(new RegExp(`\\s${flag}[\\s,]`));
        }
      }
    }
  }, 30_000);
});
