#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md in one call of at most 8 minutes on one CUDA GPU, with no network: whether a
# training step's gradients are right (bench/cuda_grad_check.py), the gpu profile end to end with capped budgets
# (with SFT's recompile count and tokens/s), bench_train.py at the gpu profile's size and at 12 x 768 with context
# 1024, and greedy answers in float32 against bfloat16.
#
# Here, once:   bash ../shared/device/wheels.sh .whl && echo /.whl/ >> .git/info/exclude
#               (optional) mkdir -p .novels && cp ../shared/corpus/*.txt .novels/ && echo /.novels/ >> .git/info/exclude
# There:        bash bench/gpu_check.sh            (carry .whl, and .novels for the data-size check)
# Everything goes to $OUT/gpu_check.txt (or the file named as the first argument); the run folders stay in out/.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${1:-${OUT:-out}/gpu_check.txt}
mkdir -p "$(dirname "$report")" out
source bench/gpu_env.sh   # the carried wheels, say()
export MINIGLM_PROFILE=gpu
section() { say; say "== $* ($(date +%T))"; }
: > "$report"
section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$report"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$report"

section "gradients: each way train.py runs a step against eager float32 (bench/cuda_grad_check.py)"
timeout 120 python3 bench/cuda_grad_check.py --ways eager_bf16 compiled 2>&1 | grep -E "^\||^torch" | tee -a "$report"

section "bench_train.py: the gpu profile's size and 12 x 768 at context 1024, bf16, compiled"
timeout 120 python3 bench/bench_train.py --sizes 8x512x8x512x32 12x768x12x1024x16 --dtypes bfloat16 --compile \
  --steps 20 2>&1 | grep -v Warning | tee -a "$report"
timeout 50 python3 bench/bench_train.py --sizes 8x512x8x512x32 --dtypes bfloat16 --compile --packed \
  --steps 20 2>&1 | grep -v Warning | tee -a "$report"

section "the gpu profile end to end on the default data (budgets capped)"
python3 prepare.py > out/gpu_prepare.log 2>&1 && python3 prepare_sft.py >> out/gpu_prepare.log 2>&1 \
  || { say "prepare failed:"; tail -5 out/gpu_prepare.log | tee -a "$report"; }
timeout 100 python3 train.py config/pretrain.py --overwrite=True --max_seconds=60 > out/gpu_pretrain.log 2>&1
say "pretrain exit $?: $(grep -E '^profile' out/gpu_pretrain.log)"
python3 -c "import json; [print(l.strip()) for l in open('out/pretrain/log.jsonl')]" 2>&1 | tee -a "$report"
TORCH_LOGS=recompiles timeout 70 python3 train.py config/sft.py --overwrite=True --max_seconds=30 \
  > out/gpu_sft.log 2>&1
say "sft exit $?: $(grep -E '^profile' out/gpu_sft.log)"
say "recompilations logged during SFT: $(grep -c 'Recompiling' out/gpu_sft.log)"
python3 -c "import json; [print(l.strip()) for l in open('out/sft/log.jsonl')]" 2>&1 | tee -a "$report"
timeout 50 python3 eval_rouge.py --out_dir out/sft --output out/eval > out/gpu_eval.log 2>&1
say "eval exit $?"; grep -vE "^(evaluating|wrote)" out/gpu_eval.log | tail -12 | tee -a "$report"
timeout 40 python3 eval_rouge.py --out_dir out/sft --output out/eval_bf16 --dtype bfloat16 > out/gpu_eval16.log 2>&1
python3 - <<'PY' 2>&1 | tee -a "$report"
import json
a = [json.loads(l) for l in open("out/eval/answers.jsonl")]
b = [json.loads(l) for l in open("out/eval_bf16/answers.jsonl")]
same = sum(x["answers"]["out/sft"]["answer"] == y["answers"]["out/sft"]["answer"] for x, y in zip(a, b))
print(f"greedy answers identical in float32 and bfloat16 inference: {same} of {len(a)}")
PY

if ls .novels/*.txt >/dev/null 2>&1; then
  section "a user's novels: the gpu profile's automatic budget on ~3M characters (capped at 60 s)"
  python3 prepare.py --dataset novels --input .novels > out/gpu_novels_prepare.log 2>&1
  timeout 90 python3 train.py config/pretrain.py --dataset=novels --sft_mix=0 --out_dir=out/novels \
    --overwrite=True --max_seconds=60 --eval_interval=25 > out/gpu_novels.log 2>&1
  say "exit $?: $(grep -E '^profile' out/gpu_novels.log)"
  python3 -c "import json; [print(l.strip()) for l in open('out/novels/log.jsonl')]" 2>&1 | tee -a "$report"
fi
section "done"
