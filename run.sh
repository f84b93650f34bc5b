#!/usr/bin/env bash
# The whole pipeline on the embedded default data: prepare -> prepare_sft -> pretrain -> sft -> eval -> report.
#
#   bash run.sh                  # picks the profile (a CUDA GPU, else the CPU: 25-30 min on 2 cores with bf16, 1-2 h with AVX2)
#   bash run.sh --profile tiny   # a smoke test of every stage in a minute
#   bash run.sh --force          # redo stages even when their outputs are up to date
#
# A stage is skipped when its output is newer than its inputs; a stage that runs again replaces its earlier
# output (train.py --overwrite=True). The first failing stage stops the run, named.
set -uo pipefail
cd "$(dirname "$0")"

PROFILE=auto
FORCE=0
PYTHON=${PYTHON:-python}
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (expected --profile auto|gpu|cpu|tiny, --force)" >&2; exit 2 ;;
  esac
done
export MINIGLM_PROFILE="$PROFILE"
PROFILE_NAME=$($PYTHON -c "from configurator import hardware_profile; print(hardware_profile())") || exit 2
echo "run.sh: profile $PROFILE_NAME"

DATA=data/jinyong
mkdir -p out
TIMES=out/stage_times.tsv
if [ "$FORCE" = 1 ] || [ ! -f "$TIMES" ]; then : > "$TIMES"; fi
EVAL_ARGS=()
if [ "$PROFILE_NAME" = tiny ]; then EVAL_ARGS=(--limit 24 --max_new_tokens 48); fi

# up_to_date OUTPUT INPUT...: the output exists and is newer than every input
up_to_date() {
  local out="$1"; shift
  [ "$FORCE" = 0 ] && [ -e "$out" ] || return 1
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    if [ -d "$f" ]; then
      [ -z "$(find "$f" -newer "$out" -print -quit)" ] || return 1
    else
      [ "$out" -nt "$f" ] || return 1
    fi
  done
}

# stage NAME OUTPUT "INPUTS" COMMAND...
stage() {
  local name="$1" out="$2" inputs="$3"; shift 3
  # shellcheck disable=SC2086
  if up_to_date "$out" $inputs; then
    echo "== $name: up to date ($out), skipped"
    return 0
  fi
  echo "== $name: $*"
  local t0=$SECONDS
  if ! "$@"; then
    echo "run.sh: stage '$name' failed (command: $*)" >&2
    exit 1
  fi
  grep -v "^$name	" "$TIMES" > "$TIMES.tmp" || true
  printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >> "$TIMES.tmp" && mv "$TIMES.tmp" "$TIMES"
}

stage prepare     "$DATA/meta.json"            "$DATA/corpus $DATA/rewrites $DATA/val prepare.py" \
      $PYTHON prepare.py --dataset jinyong
stage prepare_sft "$DATA/sft_meta.json" "$DATA/sft.jsonl $DATA/sft_wordings.jsonl $DATA/meta.json prepare_sft.py" \
      $PYTHON prepare_sft.py --dataset jinyong
stage pretrain    "out/pretrain/best"          "$DATA/meta.json $DATA/sft_meta.json configs/pretrain.py" \
      $PYTHON train.py config/pretrain.py --overwrite=True
stage sft         "out/sft/best"               "out/pretrain/latest $DATA/sft_meta.json configs/sft.py" \
      $PYTHON train.py config/sft.py --overwrite=True
stage eval        "out/eval/results.json"      "out/sft/best $DATA/test.jsonl" \
      $PYTHON eval_rouge.py --out_dir out/sft --output out/eval "${EVAL_ARGS[@]}"
stage report      "out/REPORT.md"              "out/eval/results.json" \
      $PYTHON report.py --output out/REPORT.md

echo
sed -n '1,40p' out/REPORT.md
echo
echo "Done. The report is out/REPORT.md. Chat with the model: python app.py  (then open http://127.0.0.1:7860)"
