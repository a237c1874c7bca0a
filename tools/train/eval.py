"""Evaluate a tools/train model: full-cache greedy exact match + per-(layer, KV head) decode-time ablation.
Adapted from ../shared/tools/train-retrieval-tiny/eval.py; adds twohop, --ckpt (evaluate a train.py checkpoint
directly, without exporting), --seed (public generator seed) and a per-task ablation table.

For every item the prompt (<s> + context + "\n" + input) is prefilled once with the full cache. Then several
decode "variants" run greedily in one batch, sharing that prefill cache:
  full        : every head sees the whole cache
  win8_all    : every (layer, KV head) sees only the last 8 prompt positions (+ generated tokens)
  L{l}H{h}    : only KV head h of layer l is restricted to the last 8 prompt positions
The restriction applies during answer generation only (prefill is always full), as a per-head attention mask.
A small functional re-implementation of the Llama forward is used (checked against transformers for parity).
"""
import argparse, json, math, os, random, sys, time, zlib
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tasks import Haystack, Generator, TASKS, make_eval_item, score

# answer tokens incl. the leading space token, + room for a trailing '.' and the stop token (single-digit tokenizer)
MAX_NEW = {"passkey": 10, "multikey": 12, "kv": 10, "vartrack": 32, "twohop": 8}


class Fn:
    def __init__(self, model):
        c = model.config
        self.c = c
        sd = {k: v.detach().float() for k, v in model.state_dict().items()}
        self.emb = sd["model.embed_tokens.weight"]
        self.lm = sd.get("lm_head.weight", self.emb)
        self.norm = sd["model.norm.weight"]
        self.L, self.H, self.KV = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
        self.hd = c.head_dim; self.G = self.H // self.KV; self.eps = c.rms_norm_eps
        self.layers = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            self.layers.append({k: sd[p + n] for k, n in [
                ("ln1", "input_layernorm.weight"), ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"), ("ln2", "post_attention_layernorm.weight"),
                ("g", "mlp.gate_proj.weight"), ("u", "mlp.up_proj.weight"), ("d", "mlp.down_proj.weight")]})
        theta = c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta
        self.inv = 1.0 / (theta ** (torch.arange(0, self.hd, 2).float() / self.hd))

    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, pos):  # x [..., T, hd], pos [T]
        f = pos.float()[:, None] * self.inv[None]
        e = torch.cat([f, f], -1); cos, sin = e.cos(), e.sin()
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def mlp(self, h, ly):
        return F.linear(F.silu(F.linear(h, ly["g"])) * F.linear(h, ly["u"]), ly["d"])

    @torch.no_grad()
    def prefill(self, ids):
        T = len(ids); pos = torch.arange(T)
        x = self.emb[torch.tensor(ids)][None]  # [1,T,D]
        cache = []
        for ly in self.layers:
            h = self.rms(x, ly["ln1"])
            q = F.linear(h, ly["q"]).view(1, T, self.H, self.hd).transpose(1, 2)
            k = F.linear(h, ly["k"]).view(1, T, self.KV, self.hd).transpose(1, 2)
            v = F.linear(h, ly["v"]).view(1, T, self.KV, self.hd).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            cache.append((k[0], v[0]))
            kk, vv = k.repeat_interleave(self.G, 1), v.repeat_interleave(self.G, 1)
            a = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            x = x + F.linear(a.transpose(1, 2).reshape(1, T, -1), ly["o"])
            x = x + self.mlp(self.rms(x, ly["ln2"]), ly)
        logits = F.linear(self.rms(x[:, -1], self.norm), self.lm)[0]
        return logits, cache

    def step(self, cache, newk, newv, toks, pos, neg):
        """One decode step of R variants: toks [R] at position pos over the shared prompt cache (each variant's prompt
        entries masked by neg [R, L, H, T]: 0 visible, -inf cut) and its own new entries (newk/newv, appended here).
        Returns logits [R, vocab]."""
        R = toks.shape[0]; T = cache[0][0].shape[1]
        scale = 1.0 / math.sqrt(self.hd)
        x = self.emb[toks][:, None]  # [R,1,D]
        for li, ly in enumerate(self.layers):
            h = self.rms(x, ly["ln1"])
            q = self.rope(F.linear(h, ly["q"]).view(R, 1, self.H, self.hd).transpose(1, 2), pos)  # [R,H,1,hd]
            k = self.rope(F.linear(h, ly["k"]).view(R, 1, self.KV, self.hd).transpose(1, 2), pos)
            v = F.linear(h, ly["v"]).view(R, 1, self.KV, self.hd).transpose(1, 2)
            newk[li].append(k); newv[li].append(v)
            K0, V0 = cache[li]  # [KV,T,hd]
            K0h, V0h = K0.repeat_interleave(self.G, 0), V0.repeat_interleave(self.G, 0)  # [H,T,hd]
            Kn = torch.cat(newk[li], 2).repeat_interleave(self.G, 1)  # [R,H,s+1,hd]
            Vn = torch.cat(newv[li], 2).repeat_interleave(self.G, 1)
            s0 = torch.einsum("rhd,htd->rht", q[:, :, 0], K0h) * scale + neg[:, li]
            s1 = torch.einsum("rhd,rhtd->rht", q[:, :, 0], Kn) * scale
            p = torch.softmax(torch.cat([s0, s1], -1), -1)
            a = torch.einsum("rht,htd->rhd", p[..., :T], V0h) + torch.einsum("rht,rhtd->rhd", p[..., T:], Vn)
            x = x + F.linear(a.reshape(R, 1, -1), ly["o"])
            x = x + self.mlp(self.rms(x, ly["ln2"]), ly)
        return F.linear(self.rms(x[:, 0], self.norm), self.lm)

    @torch.no_grad()
    def forced_nll(self, cache, gold, masks, eos):
        """Teacher-forced NLL (sum, nats) of gold[1:] + [eos] for each variant; gold[0] comes from the full prefill."""
        R = masks.shape[0]; T = cache[0][0].shape[1]
        mH = masks.repeat_interleave(self.G, 2)
        neg = torch.where(mH, 0.0, float("-inf"))
        targets = list(gold[1:]) + [eos]
        newk = [[] for _ in range(self.L)]; newv = [[] for _ in range(self.L)]
        nll = torch.zeros(R)
        for s, (inp, tgt) in enumerate(zip(gold, targets)):
            pos = torch.tensor([T + s])
            logits = self.step(cache, newk, newv, torch.full((R,), inp, dtype=torch.long), pos, neg)
            nll += -torch.log_softmax(logits, -1)[:, tgt]
        return nll

    @torch.no_grad()
    def decode(self, cache, first_tok, masks, n_new, stop_ids):
        """Greedy decode R variants. masks: bool [R, L, KV, T] (True = prompt position visible)."""
        R = masks.shape[0]; T = cache[0][0].shape[1]
        toks = torch.full((R,), first_tok, dtype=torch.long)
        out = [toks.clone()]
        done = torch.zeros(R, dtype=torch.bool)
        newk = [[] for _ in range(self.L)]; newv = [[] for _ in range(self.L)]
        # expand masks to query heads: [R, L, H, T]
        mH = masks.repeat_interleave(self.G, 2)
        neg = torch.where(mH, 0.0, float("-inf"))
        for s in range(n_new - 1):
            pos = torch.tensor([T + s])
            logits = self.step(cache, newk, newv, toks, pos, neg)
            toks = logits.argmax(-1)
            out.append(toks.clone())
            done = done | torch.tensor([int(t) in stop_ids for t in toks.tolist()])
            if bool(done.all()):
                break
        seqs = torch.stack(out, 1).tolist()
        res = []
        for sq in seqs:
            cut = []
            for t in sq:
                if t in stop_ids:
                    break
                cut.append(t)
            res.append(cut)
        return res


def variants(L, KV, T, window=8):
    names = ["full", f"win{window}_all"]
    m = [torch.ones(L, KV, T, dtype=torch.bool)]
    w = torch.zeros(L, KV, T, dtype=torch.bool); w[..., max(0, T - window):] = True
    m.append(w)
    for l in range(L):
        for h in range(KV):
            x = torch.ones(L, KV, T, dtype=torch.bool); x[l, h, : max(0, T - window)] = False
            m.append(x); names.append(f"L{l}H{h}")
    return names, torch.stack(m)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="HF folder (export.py output)")
    ap.add_argument("--ckpt", default="", help="or a train.py checkpoint (tokenizer from --tok)")
    ap.add_argument("--tok", default="tools/train/runs/natural-v1/tokenizer")
    ap.add_argument("--data", default="tools/train/runs/natural-v1/data")
    ap.add_argument("--seed", default="1", help="public item-generator seed")
    ap.add_argument("--seed_file", default="", help="JSON file with eval_generator_seed (overrides --seed)")
    ap.add_argument("--jsonl", default="", help="evaluate a fixed jsonl file instead of generated items")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--lengths", default="512,1024,2048")
    ap.add_argument("--ablate_lengths", default="512,1024,2048")
    ap.add_argument("--tasks", default="passkey,multikey,kv,twohop")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--out", default="eval_results.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nll", type=int, default=1, help="also compute teacher-forced answer NLL per variant")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.ckpt:
        from transformers import LlamaConfig
        ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
        tok = PreTrainedTokenizerFast.from_pretrained(a.tok)
        model = LlamaForCausalLM(LlamaConfig.from_dict(ck["config"]))
        model.load_state_dict(ck["model"]); model.eval()
        print("checkpoint", a.ckpt, "step", ck.get("state", {}).get("step"), "stage", ck.get("state", {}).get("stage"), flush=True)
    else:
        tok = PreTrainedTokenizerFast.from_pretrained(a.model)
        model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    fn = Fn(model)
    # parity check against transformers
    ids = [tok.bos_token_id] + tok("The pass key is 12345. Remember it. What is the pass key? The pass key is")["input_ids"]
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0, -1]
    mine, _ = fn.prefill(ids)
    print("parity max|diff| vs transformers:", float((ref - mine).abs().max()), flush=True)
    stop = {tok.eos_token_id} | {i for t, i in tok.get_vocab().items() if "Ċ" in t}
    if a.jsonl:
        items = [json.loads(l) for l in open(a.jsonl)]
    else:
        seed = json.load(open(a.seed_file))["eval_generator_seed"] if a.seed_file else a.seed
        hay = Haystack(os.path.join(a.data, "corpus_heldout.jsonl"), tok.backend_tokenizer)
        gen = Generator(hay, tok.backend_tokenizer)
        items = []
        for L in [int(x) for x in a.lengths.split(",")]:
            for task in a.tasks.split(","):
                rng = random.Random(zlib.crc32(f"{seed}-{task}-{L}".encode()))
                items += [make_eval_item(gen, rng, task, L) for _ in range(a.n)]
    abl_L = {int(x) for x in a.ablate_lengths.split(",")}
    acc = {}  # (task, L, variant) -> list
    nlls = {}  # teacher-forced mean NLL per answer token (tokens 2.. and eos), per variant
    t0 = time.time(); examples = []
    for n_done, it in enumerate(items):
        ids = [tok.bos_token_id] + tok(it["context"] + "\n" + it["input"])["input_ids"]
        T = len(ids)
        logits, cache = fn.prefill(ids)
        first = int(logits.argmax())
        if it["length"] in abl_L:
            names, masks = variants(fn.L, fn.KV, T, a.window)
        else:
            names, masks = variants(fn.L, fn.KV, T, a.window)
            names, masks = names[:2], masks[:2]
        if first in stop:
            outs = [[] for _ in names]
        else:
            outs = fn.decode(cache, first, masks, MAX_NEW[it["task"]], stop)
        if a.nll:
            gold = tok(" " + it["answers"][0])["input_ids"]
            nll = fn.forced_nll(cache, gold, masks, tok.eos_token_id)
            for nm, v in zip(names, nll.tolist()):
                nlls.setdefault(f'{it["task"]}|{it["length"]}|{nm}', []).append(v / len(gold))
        for nm, o in zip(names, outs):
            pred = tok.decode(o)
            acc.setdefault(f'{it["task"]}|{it["length"]}|{nm}', []).append(score(it["task"], pred, it["answers"]))
            if nm == "full" and len(examples) < 40 and n_done % 10 == 0:
                examples.append({"task": it["task"], "length": it["length"], "pred": pred, "answers": it["answers"]})
        if n_done % 50 == 0:
            print(f"{n_done}/{len(items)} {time.time()-t0:.0f}s", flush=True)
    res = {k: sum(v) / len(v) for k, v in acc.items()}
    counts = {k: len(v) for k, v in acc.items()}
    nll_res = {k: sum(v) / len(v) for k, v in nlls.items()}
    json.dump({"source": a.ckpt or a.model, "seed": a.seed_file or a.seed, "window": a.window, "acc": res, "nll": nll_res,
               "counts": counts, "examples": examples, "seconds": time.time() - t0},
              open(a.out, "w"), indent=1)
    lengths = sorted({it["length"] for it in items}); tasks = [t for t in TASKS if any(it["task"] == t for it in items)]
    print("\nFULL-CACHE exact match")
    print("task      " + "".join(f"{L:>8}" for L in lengths))
    for t in tasks:
        print(f"{t:10s}" + "".join(f"{res.get(f'{t}|{L}|full', float('nan')):8.2f}" for L in lengths))
    print(f"\nWIN{a.window}_ALL (all heads cut to last {a.window} prompt tokens at decode)")
    for t in tasks:
        print(f"{t:10s}" + "".join(f"{res.get(f'{t}|{L}|win{a.window}_all', float('nan')):8.2f}" for L in lengths))
    print("\nper-head ablation drop (full - ablated), mean over tasks")
    for L in sorted(abl_L):
        heads = sorted({k.split("|")[2] for k in res if k.split("|")[1] == str(L) and k.split("|")[2].startswith("L")})
        if not heads:
            continue
        row = []
        for hname in heads:
            d = [res[f"{t}|{L}|full"] - res[f"{t}|{L}|{hname}"] for t in tasks if f"{t}|{L}|{hname}" in res]
            row.append((hname, sum(d) / len(d)))
        print(L, " ".join(f"{h}:{d:+.2f}" for h, d in row))
        for t in tasks:
            if f"{t}|{L}|full" in res:
                print(f"  {t:9s}", " ".join(f"{h}:{res[f'{t}|{L}|full'] - res.get(f'{t}|{L}|{h}', float('nan')):+.2f}" for h in heads))
    if nll_res:
        print("\nper-head teacher-forced answer NLL increase (ablated - full), mean over tasks, nats/token")
        for L in sorted(abl_L):
            heads = sorted({k.split("|")[2] for k in nll_res if k.split("|")[1] == str(L) and k.split("|")[2].startswith("L")})
            if heads:
                print(L, "full=%.3f" % (sum(nll_res[f"{t}|{L}|full"] for t in tasks) / len(tasks)),
                      " ".join(f"{h}:{sum(nll_res[f'{t}|{L}|{h}'] - nll_res[f'{t}|{L}|full'] for t in tasks)/len(tasks):+.3f}" for h in heads))
    print(f"seconds {time.time()-t0:.0f}")


if __name__ == "__main__":
    main()
