/** The architecture registry: one module per family; loaders look names up here and nowhere else. */
import { CokvError } from '../../errors.js';
import type { Architecture } from '../config.js';
import { gemma3 } from './gemma3.js';
import { llama } from './llama.js';
import { mistral } from './mistral.js';
import { phi3 } from './phi3.js';
import { qwen2 } from './qwen2.js';
import { qwen3 } from './qwen3.js';
import { smollm3 } from './smollm3.js';
import type { ArchModule } from './types.js';

export type { ArchModule, LayerTensor, GlobalTensor, TensorNames, HfConfigReader, GgufMetaReader } from './types.js';
export { layerTensorName } from './common.js';

export const ARCHITECTURES: readonly ArchModule[] = [llama, mistral, qwen2, qwen3, gemma3, smollm3, phi3];

/**
 * Families refused with a reason: hybrids whose layers are not all softmax attention over a KV cache, and
 * mixture-of-experts models (HF model_type and GGUF architecture names).
 */
const REFUSED: Record<string, string> = {
  qwen3_next: 'a hybrid model (Gated DeltaNet linear-attention layers)',
  qwen3next: 'a hybrid model (Gated DeltaNet linear-attention layers)',
  qwen3_5: 'a hybrid model (Gated DeltaNet linear-attention layers)',
  qwen3_5_text: 'a hybrid model (Gated DeltaNet linear-attention layers)',
  qwen35: 'a hybrid model (Gated DeltaNet linear-attention layers)',
  qwen3_5_moe: 'a hybrid mixture-of-experts model (Gated DeltaNet layers)',
  qwen35moe: 'a hybrid mixture-of-experts model (Gated DeltaNet layers)',
  gemma4: 'a model with KV shared across layers (Gemma 4)',
  gemma4_text: 'a model with KV shared across layers (Gemma 4)',
  gemma3n: 'a model with KV shared across layers and per-layer embeddings (Gemma 3n)',
  gemma3n_text: 'a model with KV shared across layers and per-layer embeddings (Gemma 3n)',
  lfm2: 'a hybrid model (short convolution layers)',
  falcon_h1: 'a hybrid model (Mamba-2 layers)',
  'falcon-h1': 'a hybrid model (Mamba-2 layers)',
  jamba: 'a hybrid model (Mamba layers)',
  mamba: 'a state-space model (no attention KV cache)',
  mamba2: 'a state-space model (no attention KV cache)',
  granitemoehybrid: 'a hybrid model (Mamba-2 layers)',
  granitehybrid: 'a hybrid model (Mamba-2 layers)',
  nemotron_h: 'a hybrid model (Mamba-2 layers)',
  zamba2: 'a hybrid model (Mamba-2 layers)',
  bamba: 'a hybrid model (Mamba-2 layers)',
  recurrent_gemma: 'a hybrid model (recurrent layers)',
  rwkv6: 'a recurrent model (no attention KV cache)',
  rwkv7: 'a recurrent model (no attention KV cache)',
  qwen3_moe: 'a mixture-of-experts model',
  qwen3moe: 'a mixture-of-experts model',
  qwen2_moe: 'a mixture-of-experts model',
  qwen2moe: 'a mixture-of-experts model',
  mixtral: 'a mixture-of-experts model',
  gemma3: 'a Gemma 3 vision-language config without a text_config',
};

function supportedList(): string {
  return ARCHITECTURES.map((a) => a.architecture).join(', ');
}

/** The module for an HF model_type (or, without one, an `architectures` class); throws naming the file. */
export function archForHf(modelType: unknown, classes: readonly string[] | undefined, file: string): ArchModule {
  if (typeof modelType === 'string') {
    const m = ARCHITECTURES.find((a) => a.hfModelTypes.includes(modelType));
    if (m) return m;
    const why = Object.hasOwn(REFUSED, modelType) ? REFUSED[modelType] : undefined;
    if (why) throw new CokvError(`${file}: model_type ${JSON.stringify(modelType)} is ${why}, which cokv does not run (supported: ${supportedList()})`, 'format');
  } else if (modelType === undefined && classes) {
    const m = ARCHITECTURES.find((a) => a.hfClasses.some((c) => classes.includes(c)));
    if (m) return m;
  }
  throw new CokvError(`${file}: unsupported model_type ${JSON.stringify(modelType ?? null)} (supported: ${supportedList()})`, 'format');
}

/** The module for a GGUF `general.architecture`; throws naming the file. */
export function archForGguf(name: string, file: string): ArchModule {
  const m = ARCHITECTURES.find((a) => a.ggufArchs.includes(name));
  if (m) return m;
  const why = Object.hasOwn(REFUSED, name) ? REFUSED[name] : undefined;
  const supported = ARCHITECTURES.flatMap((a) => a.ggufArchs).join(', ');
  if (why && name !== 'gemma3') throw new CokvError(`${file}: architecture '${name}' is ${why}, which cokv does not run (supported: ${supported})`, 'format');
  throw new CokvError(`${file}: unsupported architecture '${name}' (supported: ${supported})`, 'format');
}

export function archModule(a: Architecture): ArchModule {
  return ARCHITECTURES.find((m) => m.architecture === a)!;
}
