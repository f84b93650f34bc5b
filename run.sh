#!/usr/bin/env bash
# The whole pipeline on the embedded default data: prepare -> prepare_sft -> pretrain -> sft -> eval -> report.
#
#   bash run.sh                  # picks the profile (a CUDA GPU, else the CPU: 25-30 min on 2 cores with bf16, 1-2 h with AVX2)
#   bash run.sh --profile tiny   # a smoke test of every stage in a minute
#   bash run.sh --force          # redo stages even when their outputs are up to date
#   bash run.sh --minutes 25     # cap training at 25 minutes (40% pretraining, 60% SFT): for a slow laptop
#
# A stage is skipped when its output is newer than its inputs and out/ was trained with this run's profile and
# time cap; a stage that runs again replaces its earlier output (train.py --overwrite=True). The first failing
# stage stops the run, named.
set -uo pipefail
cd "$(dirname "$0")"

PROFILE=${MINIGLM_PROFILE:-auto}   # as train.py reads it; --profile overrides
FORCE=0
MINUTES=""
PYTHON=${PYTHON:-python}
USAGE="expected --profile auto|gpu|cpu|tiny, --force, --minutes N"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile|--minutes)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value ($USAGE)" >&2; exit 2; }
      if [ "$1" = --profile ]; then PROFILE="$2"; else MINUTES="$2"; fi; shift 2 ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --minutes=*) MINUTES="${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 ($USAGE)" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in
  auto|gpu|cpu|tiny) ;;
  *) echo "run.sh: profile '$PROFILE': expected auto, gpu, cpu or tiny" >&2; exit 2 ;;
esac
PRETRAIN_CAP=(); SFT_CAP=()
if [ -n "$MINUTES" ]; then
  if ! [[ "$MINUTES" =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk -v m="$MINUTES" 'BEGIN { exit !(m * 60 >= 10) }'; then
    echo "run.sh: --minutes $MINUTES: expected a number of minutes, at least 0.2" >&2; exit 2
  fi
  # training seconds (train.py's max_seconds: evaluation and saving not counted), split as the CPU profile's
  # full run splits them; each stage's learning-rate schedule ends with its share
  PRETRAIN_CAP=(--max_seconds="$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 * 0.4 }')")
  SFT_CAP=(--max_seconds="$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 * 0.6 }')")
fi
export MINIGLM_PROFILE="$PROFILE"
PROFILE_NAME=$($PYTHON -c "from configurator import hardware_profile; print(hardware_profile())") || exit 2
echo "run.sh: profile $PROFILE_NAME"

DATA=data/jinyong
mkdir -p out
TIMES=out/stage_times.tsv
if [ "$FORCE" = 1 ] || [ ! -f "$TIMES" ]; then : > "$TIMES"; fi
EVAL_ARGS=()
if [ "$PROFILE_NAME" = tiny ]; then EVAL_ARGS=(--limit 24 --max_new_tokens 48); fi

# What out/'s models were trained with. Another profile or time cap trains again: after `--profile tiny`, its
# outputs are newer than every input file, and a plain run would otherwise keep the tiny model.
SETTINGS="profile=$PROFILE_NAME minutes=${MINUTES:-none}"
STAMP=out/run_settings.txt
if [ ! -f "$STAMP" ] && [ -f out/pretrain/best/config.json ]; then
  # an out/ from before this file: the profile its pretraining recorded, no cap, and older than any output
  recorded=$($PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["train_config"]["profile"])' \
             out/pretrain/best/config.json 2>/dev/null || echo unknown)
  echo "profile=$recorded minutes=none" > "$STAMP" && touch -t 197001010000 "$STAMP"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$SETTINGS" ]; then  # rewritten only on a change: its age is the change's
  [ -f "$STAMP" ] && echo "run.sh: out/ was trained with $(cat "$STAMP"), this run asks $SETTINGS: training again"
  echo "$SETTINGS" > "$STAMP"
fi

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
stage pretrain    "out/pretrain/best"     "$DATA/meta.json $DATA/sft_meta.json configs/pretrain.py $STAMP" \
      $PYTHON train.py config/pretrain.py --overwrite=True ${PRETRAIN_CAP[@]+"${PRETRAIN_CAP[@]}"}
stage sft         "out/sft/best"          "out/pretrain/latest $DATA/sft_meta.json configs/sft.py $STAMP" \
      $PYTHON train.py config/sft.py --overwrite=True ${SFT_CAP[@]+"${SFT_CAP[@]}"}
stage eval        "out/eval/results.json"      "out/sft/best $DATA/test.jsonl" \
      $PYTHON eval_rouge.py --out_dir out/sft --output out/eval ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"}
stage report      "out/REPORT.md"              "out/eval/results.json" \
      $PYTHON report.py --output out/REPORT.md

echo
cat out/REPORT.md
echo
echo "Done. The report is out/REPORT.md. Chat with the model: python app.py  (then open http://127.0.0.1:7860)"
