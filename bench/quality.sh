#!/usr/bin/env bash
# Quality of the whole recipe over several seeds: pretraining, SFT and evaluation on the default data, one run
# folder per seed, then the mean of the evaluation figures. The numbers in BENCHMARKS.md come from this.
#
#   bash bench/quality.sh NAME [SEED ...] [-- EXTRA PRETRAIN ARGS [-- EXTRA SFT ARGS]]
#   bash bench/quality.sh base 1337 2 3
#   bash bench/quality.sh lr3e-3 1337 2 3 -- --learning_rate=3e-3
#   bash bench/quality.sh sft_lr1e-3 1337 -- -- --learning_rate=1e-3
#
# Writes out/exp/NAME_sSEED/{pretrain,sft,eval} and out/exp/NAME.json (per-seed and mean figures, with the counts of
# bench/book_questions.py: whole-book questions of 24 and course questions of 4 answered right). Data must be
# prepared (python prepare.py && python prepare_sft.py). Set PRETRAINED=DIR to skip pretraining and start every
# seed's SFT from DIR (SFT-only experiments from one fixed pretrained model), and TEST=FILE to evaluate on FILE
# instead of data/jinyong/test.jsonl.
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
$PYTHON - "$name" "${seeds[@]}" <<'PY'
import json, sys
name, seeds = sys.argv[1], sys.argv[2:]
runs = {s: next(iter(json.load(open(f"out/exp/{name}_s{s}/eval/results.json")).values())) for s in seeds}
keys = ["rouge_l_f", "key_accuracy", "refusal_rate"]
table = {}
for s, r in runs.items():
    for g, gr in [("all", r)] + list(r.get("groups", {}).items()):
        for k in keys:
            if gr.get(k) is not None:
                table.setdefault(f"{g}.{k}", {})[s] = gr[k]
    for k in ("in_domain_refusal_rate", "ood_decline_rate"):
        if r.get(k) is not None:
            table.setdefault(k, {})[s] = r[k]
    book = next(iter(json.load(open(f"out/exp/{name}_s{s}/eval/book_questions.json")).values()))
    for k in ("book_questions", "course_questions"):
        table.setdefault(k, {})[s] = book[k]
out = {k: {**v, "mean": sum(v.values()) / len(v)} for k, v in table.items()}
json.dump(out, open(f"out/exp/{name}.json", "w"), indent=1)
for k, v in out.items():
    print(f"{name:<14}{k:<34}" + " ".join(f"{v[s]:.3f}" for s in seeds) + f"   mean {v['mean']:.3f}")
PY
