#!/usr/bin/env bash
# Quality of the whole recipe over several seeds: pretraining, SFT and evaluation on the default data, one run
# folder per seed, then the mean of the evaluation figures. The numbers in BENCHMARKS.md come from this.
#
#   bash bench/quality.sh NAME [SEED ...] [-- EXTRA PRETRAIN ARGS [-- EXTRA SFT ARGS]]
#   bash bench/quality.sh base 1337 2 3
#   bash bench/quality.sh lr3e-3 1337 2 3 -- --learning_rate=3e-3
#   bash bench/quality.sh sft_lr1e-3 1337 -- -- --learning_rate=1e-3
#
# Writes out/exp/NAME_sSEED/{pretrain,sft,eval}, then bench/quality_summary.py's table and out/exp/NAME.json:
# per-seed and mean figures, with the counts of bench/book_questions.py (whole-book questions of 24 and course
# questions of 4 answered right), over every seed evaluated under NAME, earlier calls' too (say, one call a seed,
# each with its own PRETRAINED). Data must be prepared (python prepare.py && python prepare_sft.py). Set
# PRETRAINED=DIR to skip pretraining and start every seed's SFT from DIR (SFT-only experiments from one fixed
# pretrained model), and TEST=FILE to evaluate on FILE instead of data/jinyong/test.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
name=$1; shift
seeds=(); pre=(); sft=(); part=seeds
for a in "$@"; do
  if [ "$a" = "--" ]; then part=$([ $part = seeds ] && echo pre || echo sft); continue; fi
  case $part in seeds) seeds+=("$a");; pre) pre+=("$a");; sft) sft+=("$a");; esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(1337)
mkdir -p out/exp
for s in "${seeds[@]}"; do
  d=out/exp/${name}_s$s
  t0=$SECONDS
  if [ -z "${PRETRAINED:-}" ]; then
    $PYTHON train.py config/pretrain.py --out_dir=$d/pretrain --seed=$s --overwrite=True ${pre[@]+"${pre[@]}"} > $d.pretrain.log 2>&1
    init=$d/pretrain/latest
  else
    init=$PRETRAINED
  fi
  t1=$SECONDS
  $PYTHON train.py config/sft.py --init_from=$init --out_dir=$d/sft --seed=$s --overwrite=True ${sft[@]+"${sft[@]}"} > $d.sft.log 2>&1
  t2=$SECONDS
  evaluated=$d/sft  # its best/, unless that is the starting model (train.py warns: SFT validation seen in pretraining)
  if [ "$($PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' $d/sft/best/config.json)" = 0 ]; then
    echo "$name seed $s: SFT's best/ is its starting model (step 0); evaluating sft/latest instead" >&2
    evaluated=$d/sft/latest
  fi
  $PYTHON eval_rouge.py --out_dir $evaluated --output $d/eval ${TEST:+--test "$TEST"} > $d.eval.log 2>&1
  # the whole-book and course questions a new user asks first (greedy; the course ones are out/REPORT.md's)
  $PYTHON bench/book_questions.py $evaluated --json $d/eval/book_questions.json > $d.book.log 2>&1
  echo "$name seed $s: pretrain $((t1 - t0)) s, sft $((t2 - t1)) s, eval $((SECONDS - t2)) s; $(tail -1 $d.book.log)"
done
$PYTHON bench/quality_summary.py "$name" "${seeds[@]}"
