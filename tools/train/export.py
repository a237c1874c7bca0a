"""Export a tools/train checkpoint (train.py's latest.pt / stage*_done.pt) to a Hugging Face folder, GGUF F32 and Q8_0
(gguf-py writer; pre-tokenizer "smollm" for the digit-split tokenizer) and parity reference JSON (greedy continuations
and last-position logits of a few prompts). Adapted from ../shared/tools/train-retrieval-tiny/export.py."""
import argparse, json, os, shutil, sys
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, GenerationConfig


def to_hf(ckpt, tokdir, out):
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = LlamaConfig.from_dict(ck["config"])
    cfg.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)
    tok = PreTrainedTokenizerFast.from_pretrained(tokdir)
    tok.save_pretrained(out)
    gc = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=16)
    gc.save_pretrained(out)
    return model, tok, ck


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tok, path, qtype, name="cokv-retrieval-natural"):
    import gguf
    c = model.config
    ft = gguf.LlamaFileType.ALL_F32 if qtype == "f32" else gguf.LlamaFileType.MOSTLY_Q8_0
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_rope_dimension_count(c.head_dim)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(ft)
    # tokenizer (gpt2-style byte-level BPE)
    tj = json.loads(tok.backend_tokenizer.to_str())
    vocab = tj["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    specials = {a["id"]: a["content"] for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(c.vocab_size):
        if i in specials:
            tokens.append(specials[i]); types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(inv[i]); types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    # v2 tokenizer: Sequence[Digits(individual_digits=True), ByteLevel] == llama.cpp pre-tokenizer "smollm"
    # (regex "\\p{N}" then the GPT-2 regex); v1 (no digit split) == "gpt2"
    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    w.add_tokenizer_pre("smollm" if "Digits" in json.dumps(pre) else "gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id); w.add_eos_token_id(tok.eos_token_id)
    w.add_unk_token_id(tok.unk_token_id); w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(True); w.add_add_eos_token(False)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    H, KV = c.num_attention_heads, c.num_key_value_heads

    def add(name, arr):
        arr = np.ascontiguousarray(arr.astype(np.float32))
        if qtype == "q8_0" and arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], H))
        add(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], KV))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    # read back and check
    r = gguf.GGUFReader(path)
    t = {x.name: x for x in r.tensors}
    emb = gguf.quants.dequantize(t["token_embd.weight"].data, t["token_embd.weight"].tensor_type)
    err = float(np.abs(emb.reshape(sd["model.embed_tokens.weight"].shape) - sd["model.embed_tokens.weight"]).max())
    print(f"wrote {path} ({os.path.getsize(path)/1e6:.2f} MB), {len(r.tensors)} tensors, token_embd max err {err:.2e}")


REF_PROMPTS = [
    "The pass key is 58213. Remember it. 58213 is the pass key. The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. What is the pass key? The pass key is",
    "The special magic number for violin is 4417290. Many people think that startups fail because they run out of money. The special magic number for harbor is 9031187. In practice they fail because the founders give up. What is the special magic number for violin? The special magic number for violin is",
    "line comet-river: REGISTER_CONTENT is 73105\nline tiger-velvet: REGISTER_CONTENT is 20958\nline olive-castle: REGISTER_CONTENT is 66412\nWhat is the REGISTER_CONTENT in line tiger-velvet? The REGISTER_CONTENT in line tiger-velvet is",
    "The coin is in the jar. The founders kept working. The watch is inside the chest. The jar is in the attic. Most ideas look bad at first. The chest is kept in the garage.\nIn which room is the coin? The coin is in the room called",
]


def write_reference(model, tok, out):
    os.makedirs(out, exist_ok=True)
    allref = []
    for i, p in enumerate(REF_PROMPTS):
        ids = [tok.bos_token_id] + tok(p)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, -1].float()
            cur = list(ids); gen = []
            for _ in range(16):  # greedy, full cache, no stopping
                nxt = int(model(input_ids=torch.tensor([cur])).logits[0, -1].argmax())
                gen.append(nxt); cur.append(nxt)
        top = torch.topk(logits, 10)
        ref = {"prompt": p, "prompt_format": "<s> + prompt (bos prepended, no eos)", "input_ids": ids,
               "n_tokens": len(ids), "last_logits": [round(float(v), 6) for v in logits],
               "top10_ids": top.indices.tolist(), "top10_logits": [round(float(v), 6) for v in top.values],
               "greedy_16_ids": gen, "greedy_16_text": tok.decode(gen),
               "note": "fp32 transformers LlamaForCausalLM, greedy argmax, 16 tokens, no stop on eos"}
        json.dump(ref, open(os.path.join(out, f"prompt{i}.json"), "w"))
        allref.append({"file": f"prompt{i}.json", "n_tokens": len(ids), "greedy_16_text": ref["greedy_16_text"]})
        print(i, repr(ref["greedy_16_text"]))
    json.dump(allref, open(os.path.join(out, "index.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tok", default="tools/train/runs/natural-v1/tokenizer")
    ap.add_argument("--name", default="cokv-retrieval-natural", help="GGUF general.name and file name stem")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hf_only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, tok, ck = to_hf(a.ckpt, a.tok, a.out)
    stt = ck.get("state", {})
    print("saved HF to", a.out, "step", stt.get("step"), "stage", stt.get("stage"), "tokens", stt.get("tokens"))
    if a.hf_only:
        return
    write_gguf(model, tok, os.path.join(a.out, f"{a.name}-f32.gguf"), "f32", a.name)
    write_gguf(model, tok, os.path.join(a.out, f"{a.name}-q8_0.gguf"), "q8_0", a.name)
    write_reference(model, tok, os.path.join(a.out, "reference"))


if __name__ == "__main__":
    main()
