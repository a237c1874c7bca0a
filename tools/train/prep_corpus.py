"""Build the natural-language haystack corpus (train / held-out split) for tools/train.

Adapted from ../shared/tools/train-retrieval-tiny/prep_corpus.py (same sources, same held-out split).
Also copies the existing digit-split 2048-vocab tokenizer (--tok_src, not retrained) to --tok_out.

Sources: Paul Graham essays, LongBench multi_news contexts, rendered man pages,
/usr/share/common-licenses.  Output: <out>/corpus_train.jsonl, <out>/corpus_heldout.jsonl
(each line {"src": ..., "name": ..., "text": ...}).
"""
import argparse, glob, gzip, json, os, random, re, shutil, subprocess, hashlib

ASSETS = os.environ.get("COKV_ASSETS", "/work/shared/assets/data")
HELDOUT_ESSAYS = ["founders.txt", "love.txt", "sun.txt", "wisdom.txt", "want.txt"]


def clean(t):
    t = t.replace("NEWLINE_CHAR", "\n").replace("\r", "")
    t = re.sub(r"[ \t\u00a0]+", " ", t)
    t = re.sub(r" *\n *", "\n", t)
    t = re.sub(r"\n{3,}", "\n\n", t)
    return t.strip()


def render_man(path):
    env = dict(os.environ, MANWIDTH="2000", LANG="C.UTF-8")
    try:
        out = subprocess.run(f"man -P cat -l {path} 2>/dev/null | col -bx", shell=True,
                             capture_output=True, env=env, timeout=20).stdout.decode("utf-8", "ignore")
    except Exception:
        return ""
    lines = [l.strip() for l in out.splitlines()]
    # drop header/footer lines, keep prose-like lines
    paras, cur = [], []
    for l in lines[1:-1]:
        if not l:
            if cur:
                paras.append(" ".join(cur)); cur = []
        else:
            cur.append(l)
    if cur:
        paras.append(" ".join(cur))
    paras = [p for p in paras if len(p) > 40 and sum(c.isalpha() for c in p) > 0.6 * len(p)]
    return "\n".join(paras)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tools/train/runs/natural-v1/data")
    ap.add_argument("--n_man", type=int, default=450)
    ap.add_argument("--tok_src", default="/work/shared/assets/models/cokv-retrieval-tiny")
    ap.add_argument("--tok_out", default="", help="copy tokenizer.json + tokenizer_config.json here (default: <out>/../tokenizer)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tok_out = a.tok_out or os.path.join(os.path.dirname(os.path.abspath(a.out)), "tokenizer")
    os.makedirs(tok_out, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.tok_src, f), os.path.join(tok_out, f))
    print("tokenizer copied to", tok_out)
    train, held = [], []
    for f in sorted(glob.glob(f"{ASSETS}/needle/PaulGrahamEssays/*.txt")):
        name = os.path.basename(f)
        d = {"src": "pg", "name": name, "text": clean(open(f, encoding="utf-8", errors="ignore").read())}
        (held if name in HELDOUT_ESSAYS else train).append(d)
    rows = [json.loads(l) for l in open(f"{ASSETS}/longbench/multi_news.jsonl")]
    rng = random.Random(1234)
    idx = list(range(len(rows))); rng.shuffle(idx)
    held_idx = set(idx[:20])
    for i, r in enumerate(rows):
        txt = clean(re.sub(r"Passage \d+:\n", "", r["context"]))
        d = {"src": "multi_news", "name": r.get("_id", str(i)), "text": txt}
        (held if i in held_idx else train).append(d)
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(f):
            train.append({"src": "license", "name": os.path.basename(f), "text": clean(open(f, errors="ignore").read())})
    mans = sorted(p for p in glob.glob("/usr/share/man/man1/*.gz") if os.path.getsize(p) > 2500)
    mans.sort(key=lambda p: hashlib.md5(p.encode()).hexdigest())
    n = 0
    for p in mans:
        if n >= a.n_man:
            break
        t = render_man(p)
        if len(t) > 1500:
            train.append({"src": "man", "name": os.path.basename(p), "text": clean(t)}); n += 1
    for name, docs in (("corpus_train.jsonl", train), ("corpus_heldout.jsonl", held)):
        with open(os.path.join(a.out, name), "w") as fh:
            for d in docs:
                fh.write(json.dumps(d) + "\n")
        print(name, len(docs), "docs", sum(len(d["text"]) for d in docs), "chars")


if __name__ == "__main__":
    main()
