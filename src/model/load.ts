/** Open any supported model path: a GGUF file, a Hugging Face folder, or a llama2.c checkpoint (file or folder). */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import type { ModelSource } from './source.js';

const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian

function readMagic(file: string): number | undefined {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    const n = fs.readSync(fd, b, 0, 4, 0);
    return n === 4 ? b.readUInt32LE(0) : undefined;
  } finally {
    fs.closeSync(fd);
  }
}

export async function openModel(modelPath: string): Promise<ModelSource> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(modelPath);
  } catch {
    throw new CokvError(`${modelPath}: no such file or folder`, 'file');
  }
  if (stat.isDirectory()) {
    if (fs.existsSync(path.join(modelPath, 'config.json'))) {
      const { openHfFolder } = await import('./loaders/hf.js');
      return openHfFolder(modelPath);
    }
    const entries = fs.readdirSync(modelPath);
    const ggufs = entries.filter((e) => e.endsWith('.gguf'));
    if (ggufs.length === 1) return openModel(path.join(modelPath, ggufs[0]));
    const bins = entries.filter((e) => e.endsWith('.bin') && !/^tok(enizer|\d+)\.bin$/.test(e));
    if (bins.length === 1) return openModel(path.join(modelPath, bins[0]));
    throw new CokvError(
      `${modelPath}: cannot tell the model format (expected config.json, one .gguf file, or one llama2.c .bin checkpoint; found ${ggufs.length} .gguf and ${bins.length} .bin)`,
      'file',
    );
  }
  if (stat.size < 4) throw new CokvError(`${modelPath}: file is too small to be a model (${stat.size} bytes)`, 'file');
  if (readMagic(modelPath) === GGUF_MAGIC) {
    const { openGguf } = await import('./loaders/gguf.js');
    return openGguf(modelPath);
  }
  if (modelPath.endsWith('.gguf')) throw new CokvError(`${modelPath}: bad magic, not a GGUF file`, 'format');
  if (modelPath.endsWith('.safetensors')) return openModel(path.dirname(modelPath));
  const { openLlama2c } = await import('./loaders/llama2c.js');
  return openLlama2c(modelPath);
}
