import { describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { applyChatTemplate, requireChatTemplate } from '../src/model/chat.js';

// SmolLM2-Instruct style ChatML with a default system message.
const CHATML =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}" +
  "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

// Llama-3 Instruct style.
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}" +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}" +
  '{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}' +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Mistral style: alternation enforced with raise_exception, eos after assistant turns.
const MISTRAL =
  '{{ bos_token }}{% for message in messages %}' +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

describe('applyChatTemplate', () => {
  it('ChatML (SmolLM2) with the default system message and generation prompt', () => {
    const out = applyChatTemplate(CHATML, [{ role: 'user', content: 'What is 2+2?' }], { addGenerationPrompt: true });
    expect(out).toBe(
      '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' +
      '<|im_start|>user\nWhat is 2+2?<|im_end|>\n' +
      '<|im_start|>assistant\n',
    );
  });

  it('ChatML with an explicit system message, multi-turn, no generation prompt by default', () => {
    const out = applyChatTemplate(CHATML, [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Bye' },
    ]);
    expect(out).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' +
      '<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n',
    );
  });

  it('Llama-3 with bos_token and trimming', () => {
    const out = applyChatTemplate(
      LLAMA3,
      [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: '  Name a colour.\n' }],
      { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>', addGenerationPrompt: true },
    );
    expect(out).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    const noGen = applyChatTemplate(LLAMA3, [{ role: 'user', content: 'x' }], { bosToken: '<|begin_of_text|>' });
    expect(noGen).toBe('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>');
  });

  it('Mistral: eos_token after assistant turns; raise_exception becomes a CokvError', () => {
    const opts = { bosToken: '<s>', eosToken: '</s>' };
    expect(applyChatTemplate(MISTRAL, [
      { role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' },
    ], opts)).toBe('<s>[INST] a [/INST]b</s>[INST] c [/INST]');
    let err: unknown;
    try {
      applyChatTemplate(MISTRAL, [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], { ...opts, source: 'models/m' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CokvError);
    expect((err as Error).message).toContain('models/m');
    expect((err as Error).message).toContain('Conversation roles must alternate');
  });

  it('missing template (e.g. --chat on a base model) is a clear CokvError', () => {
    expect(() => applyChatTemplate(undefined, [{ role: 'user', content: 'hi' }], { source: 'models/base' }))
      .toThrow(/models\/base: this model has no chat template/);
    expect(() => requireChatTemplate('', 'm')).toThrow(CokvError);
    expect(requireChatTemplate('x', 'm')).toBe('x');
  });

  it('a template that does not parse or fails at render is a CokvError', () => {
    expect(() => applyChatTemplate('{% if %}', [], { source: 'm' })).toThrow(CokvError);
    expect(() => applyChatTemplate('{{ messages[5].content | trim }}', [{ role: 'user', content: 'x' }])).toThrow(CokvError);
  });

  it('passes extra variables', () => {
    expect(applyChatTemplate('{{ date_string }}|{{ messages | length }}', [{ role: 'user', content: 'x' }], {
      extra: { date_string: '26 Jul 2024' },
    })).toBe('26 Jul 2024|1');
  });
});
