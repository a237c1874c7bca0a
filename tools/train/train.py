"""Train a small Llama-family GQA model (transformers LlamaForCausalLM) for long-context retrieval the natural way:
plain cross-entropy only (no attention-supervision term), AdamW, a mastery-gated length curriculum.

Loss = text_loss + answer_weight * answer_loss, both ordinary next-token cross-entropy (each a mean over its own
tokens: plain-LM tokens and the non-answer text of task sequences, resp. the answer tokens plus the stop token after
each answer). Nothing supervises attention.

Curriculum (default STAGES below; pass --stages FILE.json to replace it): passkey@128 -> +multikey/kv/twohop@128 ->
@256 (+10% LM) -> @512 -> @1024 -> @2048 -> @4096. A stage is passed when the held-out quick eval (teacher-forced
exact match of the answer tokens on items built from the HELD-OUT haystack, public monitoring seed) reaches the
stage's threshold for every gated task on --gate_consec consecutive checks (every --gate_every steps). "soft"
thresholds (twohop) stop blocking after --soft_patience steps in a stage, so a task that never forms cannot stall the
length curriculum. With probability --replay a step trains on an earlier stage's length (keeps short contexts alive).

Resumable: <out>/latest.pt (atomic: temp file + rename; the previous one is kept as latest.prev.pt) holds model,
optimizer, step, tokens, stage, gate history, the python/numpy/torch RNG states and the loss EMAs, written every
--ckpt_minutes and on SIGTERM/SIGINT; `--resume auto` continues exactly where it stopped (same data stream, same
step counter and stage). Snapshots at every stage change: <out>/stage{k}.pt. Log: JSON lines in <out>/train_log.jsonl.
"""
import argparse, json, math, os, random, signal, sys, time
import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tasks import Haystack, Generator, SOURCE_W, make_eval_item  # noqa: E402

MIX = {"passkey": 0.15, "multikey": 0.3, "kv": 0.3, "twohop": 0.25}
CORE = {"passkey": 0.9, "multikey": 0.9, "kv": 0.9}
STAGES = [
    {"L": 128, "tasks": {"passkey": 1.0}, "p_lm": 0.0, "need": {"passkey": 0.95}, "soft": {}},
    {"L": 128, "tasks": MIX, "p_lm": 0.05, "need": CORE, "soft": {"twohop": 0.6}},
    {"L": 256, "tasks": MIX, "p_lm": 0.1, "need": CORE, "soft": {"twohop": 0.6}},
    {"L": 512, "tasks": MIX, "p_lm": 0.15, "need": CORE, "soft": {"twohop": 0.6}},
    {"L": 1024, "tasks": MIX, "p_lm": 0.15, "need": CORE, "soft": {"twohop": 0.6}},
    {"L": 2048, "tasks": MIX, "p_lm": 0.15, "need": CORE, "soft": {"twohop": 0.6}},
    {"L": 4096, "tasks": MIX, "p_lm": 0.15, "need": {}, "soft": {}},  # last stage: trains until stopped
]
MAXQ = {"passkey": 1, "multikey": 4, "kv": 6, "twohop": 3, "vartrack": 1, "recall": 12}
QE_TASKS = ("passkey", "multikey", "kv", "twohop", "recall")


def build_config(a, tok):
    return LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=a.inter,
                       num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                       head_dim=a.head_dim, max_position_embeddings=a.max_pos, rms_norm_eps=1e-5,
                       rope_parameters={"rope_type": "default", "rope_theta": float(a.rope_theta)}, tie_word_embeddings=True,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=a.init_std)


class Sampler:
    """Training sequences: plain LM text (train corpus) or dense multi-question task sequences whose haystack is the
    train corpus; quick-eval items come from the held-out corpus."""

    def __init__(self, a, tok, quiet=False):
        self.tok, self.a = tok, a
        bt = tok.backend_tokenizer
        self.hay = Haystack(os.path.join(a.data, "corpus_train.jsonl"), bt)
        self.gen = Generator(self.hay, bt)
        self.gen_ho = Generator(Haystack(os.path.join(a.data, "corpus_heldout.jsonl"), bt), bt)
        self.stop = {tok.eos_token_id} | {i for t, i in tok.get_vocab().items() if "\u010a" in t}
        self.bos, self.eos, self.pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        cache = os.path.join(a.data, f"lm_stream_v{len(tok)}.npz")
        if os.path.exists(cache):
            z = np.load(cache); self.streams = {k: z[k] for k in z.files}
        else:
            streams = {}
            for line in open(os.path.join(a.data, "corpus_train.jsonl")):
                d = json.loads(line)
                streams.setdefault(d["src"], []).extend(bt.encode(d["text"], add_special_tokens=False).ids + [self.eos])
            self.streams = {k: np.array(v, dtype=np.int64) for k, v in streams.items()}
            np.savez(cache + ".tmp.npz", **self.streams); os.replace(cache + ".tmp.npz", cache)
        self.lm_srcs = [k for k in SOURCE_W if k in self.streams]
        if not quiet:
            print(f"haystack sentences train {len(self.hay.sents)} held-out {len(self.gen_ho.hay.sents)}, LM stream "
                  f"{sum(len(v) for v in self.streams.values())} tokens", flush=True)

    def enc(self, s):
        return self.tok.backend_tokenizer.encode(s, add_special_tokens=False).ids

    def lm_sample(self, rng, L):
        src = rng.choices(self.lm_srcs, weights=[SOURCE_W[k] for k in self.lm_srcs])[0]
        st = self.streams[src]
        i = rng.randrange(len(st) - L)
        ids = [self.bos] + st[i:i + L - 1].tolist()
        return ids, [1.0] * len(ids), [0.0] * len(ids)

    def task_sample(self, rng, L, task, q_frac=None, maxq=None):
        # questions take <= q_frac of the sequence (a stage may set its own q_frac / maxq: dense stages ask more)
        q_frac = self.a.q_frac if q_frac is None else q_frac
        mq = max(1, min((maxq or MAXQ)[task], int(q_frac * L / 32)))
        nq = rng.randint(max(1, mq // 2), mq) if rng.random() < self.a.dense_frac else rng.randint(1, mq)
        TW = self.a.text_weight
        for _ in range(5):
            ctx, qs, _ = self.gen.make(rng, task, L - 4 - 12 * nq, nq=nq)
            ids = [self.bos]; w = [0.0]; am = [0.0]; first = True
            for q, ans in qs:
                p = self.enc((ctx + "\n" if first else "\n") + q)
                ids += p; w += [TW] * len(p); am += [0.0] * len(p)
                if not first:  # the newline that ends the previous answer is a stop token: supervise it as answer
                    w[-len(p)] = 0.0; am[-len(p)] = 1.0
                first = False
                aa = self.enc(ans if task == "recall" else " " + ans)  # recall's value is glued to its key
                ids += aa; w += [0.0] * len(aa); am += [1.0] * len(aa)
            ids.append(self.eos); w.append(0.0); am.append(1.0)
            if len(ids) <= L:
                return ids, w, am
        return ids[:L], w[:L], am[:L]

    def batch(self, rng, L, B, stage):
        X = torch.full((B, L), self.pad, dtype=torch.long)
        Wt = torch.zeros((B, L)); Am = torch.zeros((B, L)); kinds = []
        tp = stage["tasks"]
        for b in range(B):
            if rng.random() < stage["p_lm"]:
                ids, w, am = self.lm_sample(rng, L); kinds.append("lm")
            else:
                t = rng.choices(list(tp), weights=list(tp.values()))[0]
                ids, w, am = self.task_sample(rng, L, t, stage.get("q_frac"), {**MAXQ, **stage.get("maxq", {})}); kinds.append(t)
            X[b, :len(ids)] = torch.tensor(ids)
            Wt[b, :len(w)] = torch.tensor(w); Am[b, :len(am)] = torch.tensor(am)
        return X, Wt, Am, kinds


_QE_CACHE = {}


@torch.no_grad()
def quick_eval(model, sampler, L, n=16, seed=777, tasks=QE_TASKS, bs=8, device="cpu"):
    """Teacher-forced exact match of the answer tokens per task (== greedy exact match of the answer), single-question
    eval-style items (tasks.make_eval_item) on the HELD-OUT haystack, public monitoring seed (never the eval seeds)."""
    was = model.training; model.eval(); res = {}
    for task in tasks:
        key = (task, L, n, seed)
        if key not in _QE_CACHE:
            rng = random.Random(f"{seed}-{task}-{L}")
            rows = []
            for _ in range(n):
                try:
                    it = make_eval_item(sampler.gen_ho, rng, task, L)
                except RuntimeError:  # no item of this length fitted in 50 draws: skip it (n shrinks by one)
                    continue
                ans = it["answers"][0] if task == "recall" else " " + it["answers"][0]  # recall's value is glued to its key
                rows.append(([sampler.bos] + sampler.enc(it["context"] + "\n" + it["input"]), sampler.enc(ans)))
            _QE_CACHE[key] = rows
        rows = _QE_CACHE[key]; ok = 0
        for i in range(0, len(rows), max(1, bs * 1024 // L)):
            chunk = rows[i:i + max(1, bs * 1024 // L)]
            T = max(len(p) + len(aa) for p, aa in chunk)
            X = torch.full((len(chunk), T), sampler.pad, dtype=torch.long)
            for j, (p, aa) in enumerate(chunk):
                X[j, :len(p) + len(aa)] = torch.tensor(p + aa)
            am = model(input_ids=X.to(device)).logits.argmax(-1).cpu()
            for j, (p, aa) in enumerate(chunk):
                ok += bool((am[j, len(p) - 1:len(p) + len(aa) - 1] == torch.tensor(aa)).all())
        res[task] = round(ok / max(1, len(rows)), 3)
    model.train(was)
    return res


_W = {}  # per worker process: its Sampler


def _worker_init(a, tok_dir):
    torch.set_num_threads(1)
    _W["sampler"] = Sampler(a, PreTrainedTokenizerFast.from_pretrained(tok_dir), quiet=True)


def _worker_batch(job):
    step, L, B, stage, seed = job
    return step, _W["sampler"].batch(random.Random(f"{seed}-batch-{step}-{L}"), L, B, stage)


def step_plan(a, stages, si, step):
    """(L, B) of a step with --workers: drawn from the step's own seed, so that no queue state needs checkpointing."""
    stage = stages[si]
    r = random.Random(f"{a.seed}-plan-{step}")
    prev_L = sorted({x["L"] for x in stages[:si] if x["L"] < stage["L"]})
    L = r.choice(prev_L) if prev_L and r.random() < a.replay else stage["L"]
    return L, max(1, a.batch_tokens // L)


class BatchPool:
    """--workers processes building the batches of the next steps while the device trains on this one. A batch is a
    function of (seed, step, stage) alone (step_plan, _worker_batch), so a resumed run gets the same batches; jobs
    queued for another stage (a gate passed) are dropped."""

    def __init__(self, a, stages, n, depth):
        import multiprocessing as mp
        self.a, self.stages, self.depth, self.q = a, stages, depth, []
        self.pool = mp.get_context("spawn").Pool(n, initializer=_worker_init, initargs=(a, a.tok))

    def get(self, step, si):
        if not self.q or self.q[0][0] != step or self.q[0][1] != si:
            self.q = []
        nxt = self.q[-1][0] + 1 if self.q else step
        while len(self.q) < self.depth:
            L, B = step_plan(self.a, self.stages, si, nxt)
            job = (nxt, L, B, self.stages[si], self.a.seed)
            self.q.append((nxt, si, L, B, self.pool.apply_async(_worker_batch, (job,))))
            nxt += 1
        _, _, L, B, res = self.q.pop(0)
        return L, B, res.get()[1]

    def close(self):
        self.pool.terminate()


def rng_state(rng):
    return {"py": rng.getstate(), "torch": torch.get_rng_state(), "np": np.random.get_state()}


def set_rng_state(rng, st):
    rng.setstate(st["py"]); torch.set_rng_state(st["torch"]); np.random.set_state(st["np"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tools/train/runs/natural-v1/data")
    ap.add_argument("--tok", default="tools/train/runs/natural-v1/tokenizer")
    ap.add_argument("--out", default="tools/train/runs/natural-v1")
    ap.add_argument("--init_from", default="", help="start a NEW run (fresh step counter, stages from --stages or the "
                    "defaults) from another run's checkpoint: its model config, weights and optimizer state")
    ap.add_argument("--resume", default="", help="checkpoint path, or 'auto' = <out>/latest.pt (falls back to latest.prev.pt; "
                    "starts fresh when neither exists)")
    # model (ignored on resume: the checkpoint's config is used)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--inter", type=int, default=384)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv_heads", type=int, default=4)
    ap.add_argument("--head_dim", type=int, default=32)
    ap.add_argument("--rope_theta", type=float, default=100000.0)
    ap.add_argument("--max_pos", type=int, default=4096)
    ap.add_argument("--init_std", type=float, default=0.02)
    # optimisation
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup_steps", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--batch_tokens", type=int, default=4096, help="tokens per step (batch = batch_tokens // L, >= 1)")
    ap.add_argument("--answer_weight", type=float, default=1.0)
    ap.add_argument("--text_weight", type=float, default=1.0, help="loss weight of non-answer tokens in task sequences")
    ap.add_argument("--q_frac", type=float, default=0.3)
    ap.add_argument("--dense_frac", type=float, default=0.5)
    ap.add_argument("--bf16", type=int, default=0, help="autocast bf16 for forward/backward (CPU or CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when torch sees a GPU)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes that build batches ahead (0 = in this process, the CPU default). With workers a "
                         "step's batch is drawn from its own seed (seed, step), so it does not depend on the worker count "
                         "and a resumed run gets the same batches; the stream differs from --workers 0's")
    ap.add_argument("--prefetch", type=int, default=0, help="batches queued ahead with --workers (0 = 2 per worker)")
    ap.add_argument("--slim_out", default="", help="at the end also write this file: model weights + config + stages + "
                                                 "state, no optimizer (small enough to copy back from a lent GPU machine)")
    # curriculum
    ap.add_argument("--stages", default="", help="JSON file with a list of stages (default: STAGES in this file)")
    ap.add_argument("--gate_every", type=int, default=100, help="steps between held-out mastery checks")
    ap.add_argument("--gate_consec", type=int, default=2)
    ap.add_argument("--soft_patience", type=int, default=4000, help="steps in a stage after which 'soft' thresholds stop gating")
    ap.add_argument("--replay", type=float, default=0.25, help="probability a step uses an earlier stage's length")
    ap.add_argument("--qe_n", type=int, default=16)
    ap.add_argument("--qe_seed", type=int, default=777)
    # run control
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threads_file", default="", help="file holding a thread count, re-read every 10 steps")
    ap.add_argument("--ckpt_minutes", type=float, default=5.0)
    ap.add_argument("--ckpt_steps", type=int, default=0, help="also checkpoint every N steps (0 = off; for tests)")
    ap.add_argument("--max_steps", type=int, default=0, help="stop at this global step (0 = never)")
    ap.add_argument("--time_budget", type=float, default=0, help="stop after this many seconds of this process (0 = never)")
    ap.add_argument("--log_every", type=int, default=10)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    os.makedirs(a.out, exist_ok=True)
    tok = PreTrainedTokenizerFast.from_pretrained(a.tok)

    rpath = ""
    if a.resume == "auto":
        for c in ("latest.pt", "latest.prev.pt"):
            if os.path.exists(os.path.join(a.out, c)):
                rpath = os.path.join(a.out, c); break
    elif a.resume:
        rpath = a.resume
    ck = torch.load(rpath, map_location="cpu", weights_only=False) if rpath else None

    init = None
    if ck is None and a.init_from:
        init = torch.load(a.init_from, map_location="cpu", weights_only=False)
    if ck is not None:
        cfg = LlamaConfig.from_dict(ck["config"])
        stages = ck["stages"]
    elif init is not None:
        cfg = LlamaConfig.from_dict(init["config"])
        stages = json.load(open(a.stages)) if a.stages else STAGES
    else:
        cfg = build_config(a, tok)
        stages = json.load(open(a.stages)) if a.stages else STAGES
    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else "cpu" if a.device == "auto" else a.device)
    model = LlamaForCausalLM(cfg).to(dev)  # before the optimizer: its state lives where the parameters do
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(a.seed)
    st = {"step": 0, "tokens": 0, "stage": 0, "stage_start": 0, "gate_hist": [], "stage_log": [], "train_seconds": 0.0,
          "ema": {}, "sessions": 0}
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        st = ck["state"]
        set_rng_state(rng, ck["rng"])
    elif init is not None:
        model.load_state_dict(init["model"])
        if "opt" in init:  # a slim checkpoint (--slim_out) has none: fresh AdamW moments
            opt.load_state_dict(init["opt"])
        st["init_from"] = {"path": a.init_from, "step": init["state"]["step"], "tokens": init["state"]["tokens"],
                           "train_seconds": init["state"]["train_seconds"]}
    st["sessions"] += 1
    nparam = sum(p.numel() for p in model.parameters())
    log = open(os.path.join(a.out, "train_log.jsonl"), "a")

    def emit(rec):
        s = json.dumps(rec); print(s, flush=True); log.write(s + "\n"); log.flush()

    emit({"event": "start", "resume": rpath or None, "step": st["step"], "stage": st["stage"], "params": nparam,
          "config": {k: cfg.to_dict()[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                                  "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_parameters",
                                                  "vocab_size", "tie_word_embeddings")},
          "args": vars(a), "torch": torch.__version__, "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
          "device": str(dev)})
    sampler = Sampler(a, tok)
    pool = BatchPool(a, stages, a.workers, a.prefetch or 2 * a.workers) if a.workers > 0 else None

    t_sess = time.time()
    base_seconds = st["train_seconds"]

    def save(name, keep_prev=True):
        st["train_seconds"] = base_seconds + time.time() - t_sess
        d = {"model": model.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "stages": stages,
             "state": st, "rng": rng_state(rng), "args": vars(a), "params": nparam}
        path = os.path.join(a.out, name); tmp = path + ".tmp"
        torch.save(d, tmp)
        if keep_prev and os.path.exists(path):
            os.replace(path, os.path.join(a.out, name.replace(".pt", ".prev.pt")))
        os.replace(tmp, path)

    stop = {"sig": None}

    def on_sig(sig, frm):
        stop["sig"] = sig
    signal.signal(signal.SIGTERM, on_sig); signal.signal(signal.SIGINT, on_sig)

    last_ck = time.time(); t_log = time.time(); step_log = st["step"]
    ema = st["ema"]

    def upd(k, v):
        ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v

    while True:
        if stop["sig"] is not None:
            emit({"event": "signal", "sig": int(stop["sig"]), "step": st["step"]}); break
        if a.max_steps and st["step"] >= a.max_steps:
            break
        if a.time_budget and time.time() - t_sess >= a.time_budget:
            break
        stage = stages[st["stage"]]
        if a.threads_file and st["step"] % 10 == 0 and os.path.exists(a.threads_file):
            try:
                nt = int(open(a.threads_file).read().strip() or a.threads)
                if nt >= 1 and nt != torch.get_num_threads():
                    torch.set_num_threads(nt); emit({"event": "threads", "n": nt, "step": st["step"]})
            except ValueError:
                pass
        if pool is not None:
            L, B, (X, Wt, Am, kinds) = pool.get(st["step"], st["stage"])
        else:
            prev_L = sorted({s["L"] for s in stages[:st["stage"]] if s["L"] < stage["L"]})
            L = rng.choice(prev_L) if prev_L and rng.random() < a.replay else stage["L"]
            B = max(1, a.batch_tokens // L)
            X, Wt, Am, kinds = sampler.batch(rng, L, B, stage)
        lr = a.lr * min(1.0, (st["step"] + 1) / max(1, a.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        X, Wt, Am = X.to(dev, non_blocking=True), Wt.to(dev, non_blocking=True), Am.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(a.bf16)):
            logits = model(input_ids=X).logits[:, :-1]
        tgt = X[:, 1:]; w = Wt[:, 1:]; am = Am[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt.reshape(-1), reduction="none").view_as(tgt)
        lt = (ce * w).sum() / w.sum().clamp(min=1)
        la = (ce * am).sum() / am.sum().clamp(min=1)
        loss = lt + a.answer_weight * la
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        st["step"] += 1; st["tokens"] += int((X != sampler.pad).sum())
        with torch.no_grad():
            pred = logits.argmax(-1)
            hit = ((pred == tgt).float() * am).sum(1).cpu(); cnt = am.sum(1).cpu()
            ok_tok = ((pred == tgt) | (am == 0)).cpu(); am = am.cpu()
            for t in set(kinds) - {"lm"}:
                idx = [i for i, k in enumerate(kinds) if k == t]
                upd("acc_" + t, float(hit[idx].sum() / cnt[idx].sum().clamp(min=1)))
                # exact match per answer span (a run of answer tokens, its stop token included): the eval's measure;
                # token accuracy above hides that only the first digit of an answer is hard
                spans = ok = 0
                for i in idx:
                    row = am[i].tolist(); j = 0
                    while j < len(row):
                        if row[j] == 1.0:
                            k = j
                            while k < len(row) and row[k] == 1.0:
                                k += 1
                            spans += 1; ok += bool(ok_tok[i, j:k].all()); j = k
                        else:
                            j += 1
                if spans:
                    upd("em_" + t, ok / spans)
        upd("loss", loss.item()); upd("text", lt.item())
        if am.sum() > 0:
            upd("ans", la.item())
        step = st["step"]
        if step % a.log_every == 0:
            now = time.time()
            emit({"step": step, "stage": st["stage"], "L": L, "B": B, "lr": round(lr, 6), "loss": round(loss.item(), 4),
                  **{k: round(v, 4) for k, v in sorted(ema.items())}, "gn": round(float(gn), 3), "tokens": st["tokens"],
                  "steps_per_min": round((step - step_log) * 60 / max(1e-6, now - t_log), 2),
                  "train_s": round(base_seconds + now - t_sess), "threads": torch.get_num_threads()})
            t_log = now; step_log = step
        if step % a.gate_every == 0:
            te = time.time()
            try:
                qe = quick_eval(model, sampler, stage["L"], n=a.qe_n, seed=a.qe_seed,
                                tasks=tuple(t for t in QE_TASKS if t in stage["tasks"]), device=dev)
            except Exception as e:  # a monitoring failure must not end a days-long run
                emit({"event": "quick_eval_error", "step": step, "error": repr(e)}); qe = {}
            st["gate_hist"].append(qe)
            in_stage = step - st["stage_start"]
            need = dict(stage["need"])
            if in_stage < a.soft_patience:
                need.update(stage.get("soft", {}))
            recent = st["gate_hist"][-a.gate_consec:]
            passed = bool(need) and len(recent) >= a.gate_consec and all(
                r.get(t, 0.0) >= v for r in recent for t, v in need.items())
            emit({"event": "quick_eval", "step": step, "stage": st["stage"], "L": stage["L"], "acc": qe,
                  "need": need, "passed": passed, "qe_s": round(time.time() - te, 1)})
            if passed and st["stage"] < len(stages) - 1:
                save(f"stage{st['stage']}_done.pt", keep_prev=False)
                st["stage_log"].append({"stage": st["stage"], "L": stage["L"], "passed_at": step, "acc": qe,
                                        "train_s": round(base_seconds + time.time() - t_sess)})
                st["stage"] += 1; st["stage_start"] = step; st["gate_hist"] = []
                emit({"event": "stage", "step": step, "stage": st["stage"], "L": stages[st["stage"]]["L"]})
                save("latest.pt"); last_ck = time.time()
        if time.time() - last_ck > a.ckpt_minutes * 60 or (a.ckpt_steps and step % a.ckpt_steps == 0):
            save("latest.pt")
            if a.ckpt_steps and step % a.ckpt_steps == 0:
                save(f"ck_{step:07d}.pt", keep_prev=False)
            last_ck = time.time()
    save("latest.pt")
    if pool is not None:
        pool.close()
    if a.slim_out:
        st["train_seconds"] = base_seconds + time.time() - t_sess
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": cfg.to_dict(), "stages": stages,
                    "state": st, "args": vars(a), "params": nparam}, a.slim_out)
    emit({"event": "stop", "step": st["step"], "stage": st["stage"], "tokens": st["tokens"],
          "train_s": round(st["train_seconds"])})


if __name__ == "__main__":
    main()
