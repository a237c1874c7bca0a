#!/usr/bin/env bash
# npm run test:slurm — cokv's Slurm job arrays on a real Slurm: as root, install Debian's slurm-wlm and munge if
# absent, start munged, slurmctld and slurmd on localhost from a generated one-node slurm.conf in a temp folder,
# submit deploy/slurm/profile.sbatch (a 4-task array + the afterok merge job) and deploy/slurm/eval.sbatch the
# same way, wait (bounded polling), check the merged profile equals the single-process profile bit for bit and
# the merged eval equals the single-process eval (run.json byte for byte; predictions and metrics field for field,
# timings aside), then stop the daemons it started, by pid. First it validates deploy/k8s (tools/validate-k8s.mjs).
# Exit 0: passed; 1: failed; 77: cannot run here (not root, or the packages cannot be installed).
# Needs ../shared/assets (the bundled cokv-retrieval-tiny model and retrieval data). Takes a few minutes.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ASSETS="${COKV_ASSETS:-$REPO/../shared/assets}"
say() { echo "test:slurm: $*"; }

# The Kubernetes manifests first (no cluster, no root needed): the Kubernetes schema and cokv's shard checks.
rc=0; node "$REPO/tools/validate-k8s.mjs" || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 77 ] || { say "deploy/k8s does not validate"; exit 1; }
if [ "$(id -u)" != 0 ]; then say "skipped: needs root (installs slurm-wlm and munge, starts slurmctld, slurmd, munged)"; exit 77; fi
if [ ! -d "$ASSETS/models/cokv-retrieval-tiny" ]; then say "skipped: $ASSETS/models/cokv-retrieval-tiny is absent"; exit 77; fi
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (apt-get)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/tmp/cokv-test-slurm-apt.log 2>&1; then
    say "skipped: apt-get could not install slurm-wlm and munge (see /tmp/cokv-test-slurm-apt.log)"; exit 77
  fi
fi

T="$(mktemp -d /tmp/cokv-slurm.XXXXXX)"
chmod 700 "$T"
PIDS=()
ok=0
cleanup() {
  # Stop only what this script started, by pid, newest first.
  for ((j = ${#PIDS[@]} - 1; j >= 0; j--)); do kill "${PIDS[j]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ "$ok" = 1 ]; then rm -rf "$T"; else
    for f in "$T"/log/*.log "$T"/profile/logs/* "$T"/eval/logs/*; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    say "FAILED (files kept in $T)"
  fi
}
trap cleanup EXIT
mkdir -p "$T/munge" "$T/log" "$T/state" "$T/spool"

# munged: its own key and socket, nothing of the system's.
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
munged --foreground --force --socket="$T/munge/munge.socket" --key-file="$T/munge/munge.key" --pid-file="$T/munge/munged.pid" \
  --log-file="$T/log/munged.log" --seed-file="$T/munge/munged.seed" >>"$T/log/munged.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.socket" ] || { say "munged did not start"; exit 1; }

read -r CTLD_PORT SLURMD_PORT < <(node -e '
const net = require("node:net"); const ports = [];
const next = () => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { ports.push(s.address().port); s.close(() => ports.length < 2 ? next() : console.log(ports.join(" "))); }); };
next();')
CPUS="$(nproc)"
export SLURM_CONF="$T/slurm.conf"
: > "$T/plugstack.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=cokvtest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
PlugStackConfig=$T/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=cokvnode NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=cokvnode Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -D -c -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -N cokvnode -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
  state="$(sinfo -h -N -o '%T' 2>/dev/null || true)"
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || { say "the node did not come up (sinfo: ${state:-no answer})"; exit 1; }
say "slurm $(sinfo -V | awk '{print $2}') up: slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT, $CPUS CPUs (conf $SLURM_CONF)"

# cokv from this checkout's source (a stale dist/ cannot hide a change), one thread per task.
export COKV_CMD="node --import tsx $REPO/src/cli/run.ts"
export COKV_CACHE_DIR="$T/cache"
export COKV_SBATCH_ARGS="--cpus-per-task=1"
SHARDS=4
M="$ASSETS/models/cokv-retrieval-tiny" D="$ASSETS/data/retrieval-dev.jsonl"
# --samples is per shard: $SHARDS shards × 8 = the single run's 32 (--tolerance 0: neither stops early).
PROFILE=(--model "$M" --data "$D" --task retrieval --subset passkey,kv --lengths 512 --limit 2 --runs 2 --seed 7 --tolerance 0 --checkpoint-every 4)
EVAL=(--model "$M" --data "$D" --dataset retrieval --subset passkey --lengths 512 --limit 3 --presses full,snapkv,adakv,cokv --budgets 16,32)

cd "$REPO"
say "single-process profile and eval (the references)"
$COKV_CMD profile "${PROFILE[@]}" --samples $((SHARDS * 8)) --quiet --out "$T/single-profile.json"

wait_jobs() { # wait_jobs LABEL JOBID… : bounded polling until no job is pending or running, then all COMPLETED
  local label="$1"; shift
  local deadline=$((SECONDS + ${COKV_SLURM_TIMEOUT:-900}))
  while squeue -h -j "$(IFS=,; echo "$*")" -t PENDING,RUNNING,CONFIGURING,COMPLETING 2>/dev/null | grep -q .; do
    [ $SECONDS -lt $deadline ] || { say "$label: jobs $* still queued after ${COKV_SLURM_TIMEOUT:-900} s"; squeue; exit 1; }
    sleep 2
  done
  # Every job (each array task has its own line) must have COMPLETED with exit code 0.
  local id states
  for id in "$@"; do
    states="$(scontrol -o show job "$id" | awk '{ delete v; for (i = 1; i <= NF; i++) { p = index($i, "="); if (p) v[substr($i, 1, p - 1)] = substr($i, p + 1) }
      printf "%s %s %s\n", (v["ArrayTaskId"] != "" ? v["ArrayJobId"] "_" v["ArrayTaskId"] : v["JobId"]), v["JobState"], v["ExitCode"] }')"
    [ -n "$states" ] || { say "$label: scontrol knows no job $id"; exit 1; }
    if echo "$states" | grep -qv ' COMPLETED 0:0$'; then say "$label: job $id: not every task COMPLETED with exit 0: $(echo "$states" | tr '\n' ';')"; exit 1; fi
    echo "$states" | while read -r j st ec; do echo "  job $j $st (exit $ec)"; done
  done
}

submit() { # submit SCRIPT OUT ARGS… → "ARRAY MERGE"
  local script="$1" out="$2"; shift 2
  local line
  line="$(COKV_OUT="$out" COKV_SHARDS=$SHARDS bash "$script" "$@")"
  echo "  $line" >&2
  sed -E 's/^submitted: .* job ([0-9]+) \(.*merge job ([0-9]+) .*/\1 \2/' <<<"$line"
}

say "profile: submitting deploy/slurm/profile.sbatch ($SHARDS array tasks + the afterok merge)"
read -r PA PM < <(submit deploy/slurm/profile.sbatch "$T/profile" "${PROFILE[@]}" --samples 8)
# The merge waits for the array: it must still be pending (Dependency) while any task is queued or running.
dep="$(scontrol -o show job "$PM" | grep -o 'Dependency=[^ ]*')"
case "$dep" in *"afterok:${PA}_"*|*"afterok:$PA"*) ;; *) say "merge job $PM has no afterok dependency on $PA ($dep)"; exit 1 ;; esac
$COKV_CMD eval "${EVAL[@]}" --profile "$T/single-profile.json" --quiet --out "$T/single-eval" >/dev/null
wait_jobs profile "$PA" "$PM"
tasks="$(ls "$T/profile"/shard-*-of-$SHARDS.json | wc -l)"
[ "$tasks" = $SHARDS ] || { say "profile: $tasks shard files, expected $SHARDS"; exit 1; }

say "eval: submitting deploy/slurm/eval.sbatch ($SHARDS array tasks + the afterok merge)"
read -r EA EM < <(submit deploy/slurm/eval.sbatch "$T/eval" "${EVAL[@]}" --profile "$T/single-profile.json")
wait_jobs eval "$EA" "$EM"

say "afterok: an array with a failing task (a missing --model) must never start its merge"
read -r FA FM < <(submit deploy/slurm/profile.sbatch "$T/fail" "${PROFILE[@]}" --samples 8 --model "$T/no-such-model")
deadline=$((SECONDS + 300))
while squeue -h -j "$FA" 2>/dev/null | grep -q .; do [ $SECONDS -lt $deadline ] || { say "failing array $FA still queued"; exit 1; }; sleep 1; done
for _ in $(seq 30); do fm="$(scontrol -o show job "$FM" | grep -o 'JobState=[A-Z_]*')"; [ "$fm" = JobState=PENDING ] || break; sleep 1; done
[ "$fm" = JobState=CANCELLED ] && [ ! -e "$T/fail/profile.json" ] || { say "merge job $FM after a failed array: $fm (expected CANCELLED, no profile.json)"; exit 1; }
echo "  job $FA failed, merge job $FM CANCELLED (dependency never satisfied), no profile.json"

node "$REPO/tools/test-slurm-compare.mjs" "$T/single-profile.json" "$T/profile/profile.json" "$T/single-eval" "$T/eval/results"
ok=1
say "passed: $SHARDS Slurm array tasks + merge = the single-process profile, bit for bit; the same for a sharded eval"
