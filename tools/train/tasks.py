"""Synthetic long-context retrieval task generator embedded in natural haystack text.

Copied from ../shared/tools/train-retrieval-tiny/tasks.py (this project's own reference code); tools/train trains
passkey, multikey, kv and twohop (the two-hop task needs two lookups chained inside one forward pass: object ->
container from one fact, then container -> room from another). vartrack is kept but not trained by default.

Families: passkey, multikey (multi-key needle), kv (key-value line retrieval),
vartrack (variable tracking), twohop (A is in B, B is in C).
An item = {"context", "input", "answers", "task", "length"}; the model prompt is
    "<s>" + context + "\n" + input
and the expected greedy continuation is " " + answers[0] (then "</s>" or "\n").
"""
import json, random, re, string

TASKS = ["passkey", "multikey", "kv", "vartrack", "twohop"]

# Keys are words that are ONE token (with their leading space) in the project's 2048-vocab tokenizer (checked by
# Generator.__init__). With the earlier list (apple anchor ... zebra: 1-5 tokens, mostly 3, e.g. ` falcon` = ` f` `al`
# `con`) no run formed the key lookup (tools/train/README.md, natural-v1..v5): the answer had to be found by a match
# on 3-4 key tokens whose last tokens many keys share. One token per key makes it the plain induction lookup.
KEY_WORDS = """access account address alpha arch backend beta block boot branch build cert child class client cluster
code command commit config container count data disk document endpoint error family field file flag format function
group hand head host image input instance interface kind language level library limit link list machine memory
message mode name network node object option order output pack path pattern people point policy pool port prefix
program project prompt property range record region remote report repository request resource result script search
second section server service setting shell size source state status string system target test time type unit user
variable version year zone""".split()

OBJECTS = """key ring coin watch letter phone map book wallet ticket badge medal glove sock pen brush spoon cup
photo diary compass whistle marble button necklace shell""".split()
CONTAINERS = """box bag drawer basket chest jar crate suitcase envelope cupboard trunk backpack tin pouch folder
bucket cabinet case barrel sack""".split()
PLACES = """kitchen garage attic cellar library office bedroom bathroom garden hallway studio barn basement
pantry balcony porch shed lobby workshop laundry""".split()

PASSKEY_NEEDLES = ["The pass key is {v}. Remember it. {v} is the pass key.",
                   "The pass key is {v}. Remember it.",
                   "Remember this: the pass key is {v}."]
PASSKEY_Q = ["What is the pass key? The pass key is",
             "Question: What is the pass key mentioned in the text above? Answer: The pass key is"]
PASSKEY_INTRO = "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it."

MK_NEEDLES = ["The special magic number for {k} is {v}.",
              "The special magic number for {k} is {v}. Remember it.",
              "One of the special magic numbers for {k} is {v}."]
MK_Q = ["What is the special magic number for {k}? The special magic number for {k} is",
        "Question: What is the special magic number for {k} mentioned in the text? Answer: The special magic number for {k} is"]

KV_INTRO = ["Below is a record of lines I want you to remember.",
            "Here is a list of registers. Each line has a REGISTER_CONTENT value."]
KV_LINE = "line {k}: REGISTER_CONTENT is {v}"
KV_Q = ["What is the REGISTER_CONTENT in line {k}? The REGISTER_CONTENT in line {k} is",
        "Question: Tell me the REGISTER_CONTENT in line {k}. Answer: The REGISTER_CONTENT in line {k} is"]

VT_FIRST = "VAR {a} = {v}."
VT_COPY = "VAR {b} = VAR {a}."
VT_Q = ["Which variables hold the value {v}? The variables that hold the value {v} are:",
        "Question: Find all variables that are assigned the value {v}. Answer: The variables assigned the value {v} are:"]

TH_FACT1 = ["The {o} is in the {c}.", "The {o} is inside the {c}."]
TH_FACT2 = ["The {c} is in the {p}.", "The {c} is kept in the {p}."]
TH_Q = ["In which room is the {o}? The {o} is in the room called",
        "Question: Which room contains the {o}? Answer: The {o} is in the room called"]


def digits(rng, n):
    return str(rng.randint(10 ** (n - 1), 10 ** n - 1))


def varname(rng, n=4):
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def template_text_sample(rng):
    """Short synthetic strings used to give the tokenizer the task vocabulary."""
    t = rng.randrange(5)
    if t == 0:
        v = digits(rng, 5); return rng.choice(PASSKEY_NEEDLES).format(v=v) + " " + rng.choice(PASSKEY_Q) + " " + v
    if t == 1:
        k = rng.choice(KEY_WORDS); v = digits(rng, 7)
        return rng.choice(MK_NEEDLES).format(k=k, v=v) + " " + rng.choice(MK_Q).format(k=k) + " " + v
    if t == 2:
        k = rng.choice(KEY_WORDS) + "-" + rng.choice(KEY_WORDS); v = digits(rng, 5)
        return rng.choice(KV_INTRO) + "\n" + KV_LINE.format(k=k, v=v) + "\n" + rng.choice(KV_Q).format(k=k) + " " + v
    if t == 3:
        a, b, v = varname(rng), varname(rng), digits(rng, 5)
        return VT_FIRST.format(a=a, v=v) + " " + VT_COPY.format(a=a, b=b) + " " + rng.choice(VT_Q).format(v=v) + f" {a} {b}"
    o, c, p = rng.choice(OBJECTS), rng.choice(CONTAINERS), rng.choice(PLACES)
    return rng.choice(TH_FACT1).format(o=o, c=c) + " " + rng.choice(TH_FACT2).format(c=c, p=p) + " " + rng.choice(TH_Q).format(o=o) + " " + p


SOURCE_W = {"pg": 0.35, "multi_news": 0.35, "man": 0.2, "license": 0.1}


class Haystack:
    """Sentences of the corpus; a sample is a run of consecutive sentences from one source
    (source picked with SOURCE_W so man pages do not dominate)."""
    def __init__(self, corpus_jsonl, tok):
        self.tok = tok
        sents = []
        self.ranges = {}
        for line in open(corpus_jsonl):
            d = json.loads(line)
            txt = d["text"]
            lo = len(sents)
            for para in txt.split("\n"):
                for s in re.split(r"(?<=[.!?])\s+", para.strip()):
                    s = s.strip()
                    if 3 <= len(s) <= 600 and not re.search(r"\d{5,}|VAR |REGISTER_CONTENT|pass key|magic number", s):
                        sents.append(s)
            r = self.ranges.setdefault(d["src"], [lo, len(sents)])
            r[1] = len(sents)
        self.sents = sents
        self.srcs = [k for k in self.ranges if k in SOURCE_W] or list(self.ranges)
        self.srcw = [SOURCE_W.get(k, 1.0) for k in self.srcs]
        enc = tok.encode_batch([" " + s for s in sents], add_special_tokens=False)
        self.ntok = [len(e.ids) for e in enc]

    def sample(self, rng, budget):
        out, tot = [], 0
        lo, hi = self.ranges[rng.choices(self.srcs, weights=self.srcw)[0]]
        i = rng.randrange(lo, hi)
        while True:
            n = self.ntok[i]
            if tot + n > budget:
                # try to fill the remainder with a short sentence further on
                if budget - tot < 4 or len(out) > 2000:
                    break
                i = i + 1 if i + 1 < hi else lo
                if n > budget - tot and self.ntok[i] > budget - tot:
                    j = rng.randrange(len(self.sents))
                    tries = 0
                    while self.ntok[j] > budget - tot and tries < 50:
                        j = rng.randrange(len(self.sents)); tries += 1
                    if self.ntok[j] > budget - tot:
                        break
                    i = j
                continue
            out.append(self.sents[i]); tot += n
            i = i + 1 if i + 1 < hi else lo
        return out, tot


class Generator:
    def __init__(self, hay, tok):
        self.hay, self.tok = hay, tok
        multi = [w for w in KEY_WORDS if self.ntok(" " + w) != 1]
        if multi:
            raise ValueError(f"KEY_WORDS must be one token each under this tokenizer; not: {' '.join(multi[:10])}")
        # tokens per kv line under this tokenizer (13 for the v1 4096-vocab BPE, 18 with single-digit tokens)
        self.line_tok = self.ntok(KV_LINE.format(k="node port", v="73105") + "\n")

    def ntok(self, s):
        return len(self.tok.encode(s, add_special_tokens=False).ids)

    def _embed(self, rng, budget, needles, depths=None, ordered=False, prefix=None):
        """Insert needle strings into haystack sentences at random depths."""
        ntn = sum(self.ntok(" " + n) for n in needles) + (self.ntok(prefix) if prefix else 0)
        sents, _ = self.hay.sample(rng, max(8, budget - ntn))
        if depths is None:
            depths = [rng.uniform(0.0, 0.95) for _ in needles]
        if ordered:
            depths = sorted(depths)
        slots = [int(round(d * len(sents))) for d in depths]
        # insert from the back so earlier indices stay valid; keep order for equal slots
        items = sorted(zip(slots, range(len(needles))), key=lambda x: (x[0], x[1]))
        for pos, k in reversed(items):
            sents.insert(pos, needles[k])
        ctx = " ".join(sents)
        if prefix:
            ctx = prefix + " " + ctx
        return ctx, depths

    # each make_* returns context, list of (input, answer), meta
    def make_passkey(self, rng, budget, nq=1):
        v = digits(rng, 5)
        needle = rng.choice(PASSKEY_NEEDLES).format(v=v)
        q = rng.choice(PASSKEY_Q)
        prefix = PASSKEY_INTRO if rng.random() < 0.5 else None
        ctx, d = self._embed(rng, budget - self.ntok(q) - 4, [needle], prefix=prefix)
        return ctx, [(q, v)], {"depth": d[0]}

    def make_multikey(self, rng, budget, nq=1, nkeys=None):
        nkeys = nkeys or rng.randint(max(2, nq), 8)
        keys = rng.sample(KEY_WORDS, nkeys)
        vals = [digits(rng, 7) for _ in keys]
        tmpl = rng.choice(MK_NEEDLES)
        needles = [tmpl.format(k=k, v=v) for k, v in zip(keys, vals)]
        qt = rng.choice(MK_Q)
        ask = rng.sample(range(nkeys), min(nq, nkeys))
        qs = [(qt.format(k=keys[i]), vals[i]) for i in ask]
        qlen = sum(self.ntok(q) + 10 for q, _ in qs)
        ctx, d = self._embed(rng, budget - qlen, needles)
        return ctx, qs, {"depth": d[ask[0]], "nkeys": nkeys}

    def make_kv(self, rng, budget, nq=1, frac=None):
        intro = rng.choice(KV_INTRO)
        qt = rng.choice(KV_Q)
        frac = frac if frac is not None else rng.uniform(0.3, 0.9)
        line_tok = self.line_tok
        nlines = max(3, int(frac * budget / line_tok))
        keys, seen = [], set()  # a list, not a set: set order of str depends on PYTHONHASHSEED (not reproducible)
        while len(keys) < nlines:
            k = rng.choice(KEY_WORDS) + " " + rng.choice(KEY_WORDS)  # two one-token words: ` node` ` port`
            if k not in seen:
                seen.add(k); keys.append(k)
        rng.shuffle(keys)
        vals = [digits(rng, 5) for _ in keys]
        block = intro + "\n" + "\n".join(KV_LINE.format(k=k, v=v) for k, v in zip(keys, vals)) + "\n"
        ask = rng.sample(range(nlines), min(nq, nlines))
        qs = [(qt.format(k=keys[i]), vals[i]) for i in ask]
        qlen = sum(self.ntok(q) + 8 for q, _ in qs)
        blen = self.ntok(block)
        rest = max(0, budget - qlen - blen)
        before = int(rest * rng.random())
        s1, _ = self.hay.sample(rng, before) if before > 8 else ([], 0)
        s2, _ = self.hay.sample(rng, rest - before) if rest - before > 8 else ([], 0)
        ctx = (" ".join(s1) + "\n" if s1 else "") + block + " ".join(s2)
        return ctx.rstrip(), qs, {"depth": (before + blen * (ask[0] + 1) / (nlines + 1)) / max(1, budget), "nlines": nlines}

    def make_vartrack(self, rng, budget, nq=1, nvars=None, nchains=None):
        nchains = nchains or rng.randint(1, 3)
        chains, vals, used = [], [], set()
        for c in range(nchains):
            n = (nvars if (nvars and c == 0) else rng.randint(2, 5))
            names = []
            while len(names) < n:
                x = varname(rng)
                if x not in used:
                    used.add(x); names.append(x)
            chains.append(names); vals.append(digits(rng, 5))
        needles, depths = [], []
        for names, v in zip(chains, vals):
            ds = sorted(rng.uniform(0.0, 0.95) for _ in names)
            needles.append(VT_FIRST.format(a=names[0], v=v)); depths.append(ds[0])
            for j in range(1, len(names)):
                needles.append(VT_COPY.format(a=names[j - 1], b=names[j])); depths.append(ds[j])
        # stable insertion: needles with equal slot keep the chain order (sorted by depth, then index)
        order = sorted(range(len(needles)), key=lambda i: depths[i])
        needles = [needles[i] for i in order]; depths = [depths[i] for i in order]
        qt = rng.choice(VT_Q)
        qs = [(qt.format(v=vals[0]), " ".join(chains[0]))]
        ctx, _ = self._embed(rng, budget - self.ntok(qs[0][0]) - 6 * len(chains[0]) - 4, needles, depths=depths, ordered=True)
        return ctx, qs, {"depth": min(d for d in depths), "nvars": len(chains[0])}

    def make_twohop(self, rng, budget, nq=1, nchains=None):
        nchains = nchains or rng.randint(2, 4)
        # object, container and room words: distinct single-token words (as the keys; OBJECTS / CONTAINERS / PLACES
        # are mostly 2-3 tokens here)
        words = rng.sample(KEY_WORDS, 3 * nchains)
        objs, conts, places = words[:nchains], words[nchains:2 * nchains], words[2 * nchains:]
        f1, f2 = rng.choice(TH_FACT1), rng.choice(TH_FACT2)
        needles = [f1.format(o=o, c=c) for o, c in zip(objs, conts)] + [f2.format(c=c, p=p) for c, p in zip(conts, places)]
        qt = rng.choice(TH_Q)
        ask = rng.sample(range(nchains), min(nq, nchains))
        qs = [(qt.format(o=objs[i]), places[i]) for i in ask]
        qlen = sum(self.ntok(q) + 4 for q, _ in qs)
        ctx, d = self._embed(rng, budget - qlen, needles)
        return ctx, qs, {"depth": min(d[ask[0]], d[nchains + ask[0]]), "nchains": nchains}

    def make_recall(self, rng, budget, nq=1, npairs=None):
        """Training-only drill, not an eval task: pairs `word1234567` (value glued to its key, so no shared token sits
        between them) and questions `recall word` -> `1234567`. The value follows the key exactly as in the context:
        the plain induction pattern (find the current token earlier, copy what followed it) with several candidates,
        the circuit the eval tasks need with a longer prefix (`... for word is` + ` ` + digits). Every pair can be
        asked; a little haystack pads the rest."""
        npairs = npairs or rng.randint(4, 12)
        keys = rng.sample(KEY_WORDS, npairs)
        vals = [digits(rng, rng.choice((5, 7))) for _ in keys]
        needles = [f"{k}{v}." for k, v in zip(keys, vals)]
        ask = rng.sample(range(npairs), min(max(nq, npairs // 2 + 1), npairs))
        qs = [(f"recall {keys[i]}", vals[i]) for i in ask]
        qlen = sum(self.ntok("\n" + q) + 9 for q, _ in qs) + 3
        ntn = sum(self.ntok(" " + n) for n in needles)
        rest = max(0, budget - qlen - ntn)
        sents, _ = self.hay.sample(rng, rest) if rest > 8 else ([], 0)
        # "Remember:" first, so every key is a space-prefixed word as in the questions
        ctx = "Remember: " + (" ".join(needles + sents) if rng.random() < 0.5 else " ".join(sents + needles))
        return ctx, qs, {"npairs": npairs}

    def make(self, rng, task, budget, nq=1, **kw):
        return getattr(self, "make_" + task)(rng, budget, nq=nq, **kw)


EVAL_KW = {"passkey": {}, "multikey": {"nkeys": 4}, "kv": {"frac": 0.6}, "vartrack": {"nvars": 4, "nchains": 2},
           "twohop": {"nchains": 4},  # 4 chains: guessing a room scores 0.25
           "recall": {"npairs": 8}}  # the training drill, for gating a drill stage only (not a benchmark task)


def make_eval_item(gen, rng, task, length):
    """Single-question item whose prompt (bos + context + '\n' + input) is ~length tokens."""
    for _ in range(50):
        ctx, qs, meta = gen.make(rng, task, length - 2, nq=1, **EVAL_KW[task])
        inp, ans = qs[0]
        n = 1 + gen.ntok(ctx + "\n" + inp)
        if n <= length and (task in ("vartrack", "twohop") or ctx.count(ans) == 1):
            return {"context": ctx, "input": inp, "answers": [ans], "task": task, "length": length,
                    "n_tokens": n, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in meta.items()}}
    raise RuntimeError("could not build item")


def score(task, pred, answers):
    pred = pred.strip().split("\n")[0].strip()
    if task == "vartrack":
        got = set(re.findall(r"\b[A-Z]{4}\b", pred))
        return float(got == set(answers[0].split()))
    pred = pred.rstrip(".,;:!? ").strip()
    return float(pred in answers)
