#!/bin/bash
# One training run on a lent GPU machine (the device tool's `run`, kind nvidia-h200: PyTorch + transformers there, 16
# cores, nothing to download). Trains from scratch on CUDA for $BUDGET seconds (default 420: a 600 s command with the
# spawn of the data workers, the quick evals and the copy back inside it) with batches built by 14 worker processes,
# then leaves under $OUT: slim.pt (weights + config + stages + state, no optimizer: ~7 MB for the 1.7 M-parameter model)
# and train_log.jsonl. Back here: `python3 tools/train/export.py --ckpt <files_at>/slim.pt ...` (README "GPU run").
# The same path on this CPU, as a smoke test: OUT=/tmp/gpu-smoke PYTHON=/tmp/venv/bin/python DEVICE=cpu WORKERS=2 BUDGET=60 bash tools/train/gpu_run.sh
# Carried (`carry`): tools/train/gpu (corpus_train.jsonl, corpus_heldout.jsonl, tokenizer/: prepared by the README's
# commands, ~10 MB; the tokenized LM stream is rebuilt there in seconds).
set -eo pipefail
export PYTHONUNBUFFERED=1
G=tools/train/gpu
PY=${PYTHON:-python3}
: "${OUT:?OUT must name the folder the results go to}"
mkdir -p "$OUT"; rm -rf /tmp/gpu-run   # a fresh run every time (a smoke test here may have left one)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
$PY tools/train/train.py --data $G/data --tok $G/tokenizer --out /tmp/gpu-run --device ${DEVICE:-cuda} --bf16 1 \
  --workers ${WORKERS:-14} --batch_tokens ${BATCH_TOKENS:-32768} --lr ${LR:-2e-3} --answer_weight 3 --text_weight 0.3 \
  --stages ${STAGES:-tools/train/stages-v6.json} --soft_patience 2000 --gate_every 100 --log_every 50 \
  --time_budget ${BUDGET:-420} --ckpt_minutes 1000 --slim_out $OUT/slim.pt > $OUT/train.out 2>&1 || echo "train.py exit $?"
cp /tmp/gpu-run/train_log.jsonl $OUT/ 2>/dev/null || true
grep -E '"event": "(start|stage|stop)"|quick_eval' $OUT/train.out | cut -c1-300 | tail -40
tail -n 3 $OUT/train.out | cut -c1-400
