"""Generate from a checkpoint: continue a text (pretraining checkpoint) or answer a question (SFT checkpoint).

    python sample.py --out_dir out/pretrain --start "郭靖"
    python sample.py --out_dir out/sft --start "小龙女和杨过是什么关系？"
    python sample.py --start FILE:prompts.txt --num_samples 2
    python sample.py --input_data in.jsonl --output_data out.jsonl     # adds "answer" to each {"question": ...}
                                                                       # (a record's own "answer" becomes "reference")
"""
import argparse
import json
import sys

from data_utils import DataError, detect_and_decode, read_records
from engine import Engine, add_sampling_args, sampling_params
from errors import UserError, run_main
from fsutil import atomic_write


def read_questions(path):
    """The records of a JSONL (or JSON array) file, each with a non-empty string 'question'."""
    rows = []
    for _, rec, where in read_records(path):
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise DataError(f"{where}: expected an object with a non-empty string field 'question'")
        rows.append(rec)
    if not rows:
        raise DataError(f"{path}: no questions")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", default="out/sft", help="checkpoint or run folder")
    ap.add_argument("--start", default="郭靖", help="text, question, or FILE:path with one prompt per line")
    ap.add_argument("--num_samples", type=int, default=1)
    ap.add_argument("--input_data", help="JSONL with a 'question' per line (batch mode)")
    ap.add_argument("--output_data", help="where batch mode writes the lines with 'answer' added")
    add_sampling_args(ap)
    args = ap.parse_args()
    if bool(args.input_data) != bool(args.output_data):
        raise DataError("--input_data and --output_data go together")
    if args.num_samples < 1:
        raise UserError(f"--num_samples {args.num_samples}: expected 1 or more")
    params = sampling_params(args)  # bad sampling values are refused before the model is loaded
    engine = Engine.from_checkpoint(args.out_dir, args.device, args.dtype, chat=args.chat or None)
    mode = "chat" if engine.is_chat else "text completion"
    print(f"{engine.folder}: {mode} model, {engine.model.num_params() / 1e6:.2f}M parameters", file=sys.stderr)
    total_tokens, total_seconds = 0, 0.0

    if args.input_data:
        rows = read_questions(args.input_data)
        answers = engine.reply_batch([r["question"] for r in rows], params)
        kept = 0
        with atomic_write(args.output_data) as f:
            for r, a in zip(rows, answers):
                if "answer" in r and "reference" not in r:  # a test file's own answer is not overwritten
                    r, kept = {**r, "reference": r["answer"]}, kept + 1
                f.write(json.dumps({**r, "answer": a}, ensure_ascii=False) + "\n")
        total_tokens, total_seconds = engine.last_stats["tokens"], engine.last_stats["seconds"]
        print(f"wrote {len(rows)} answers to {args.output_data}"
              + (f" (the input's own 'answer' kept as 'reference' in {kept} of them)" if kept else ""))
    else:
        if args.start.startswith("FILE:"):
            path = args.start[5:]
            try:
                with open(path, "rb") as f:
                    text, _ = detect_and_decode(f.read(), path)
            except FileNotFoundError:
                raise DataError(f"{path}: no such file") from None
            prompts = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            prompts = [args.start]
        for prompt in prompts:
            for k in range(args.num_samples):
                params.seed = args.seed + k
                print(f"--- {prompt}" if engine.is_chat else "---")
                if not engine.is_chat:
                    print(prompt, end="", flush=True)
                for piece in engine.stream(prompt, params):
                    print(piece, end="", flush=True)
                print()
                total_tokens += engine.last_stats["tokens"]
                total_seconds += engine.last_stats["seconds"]
    rate = total_tokens / total_seconds if total_seconds else 0.0
    print(f"generated {total_tokens} tokens in {total_seconds:.2f}s ({rate:.1f} tokens/s)")


if __name__ == "__main__":
    run_main(main)
