"""Reading what users hand us (novels, question-answer files), writing outputs safely, and drawing batches.

Everything here raises DataError with a one-line message naming the file (and line) for bad input; the scripts
print it and exit with code 2.
"""
import codecs
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil

import numpy as np
import torch

from errors import UserError


class DataError(UserError):
    pass


# ---- corpus text --------------------------------------------------------------------------------------------
def detect_and_decode(raw, path="<bytes>"):
    """Bytes to (text, encoding name). BOMs first, then strict UTF-8, then GB18030 (a superset of GBK/GB2312)."""
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            text = raw.decode(enc, errors="replace")
            return _check_decoded(text, path, enc), enc
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path}: looks binary (NUL bytes) and has no UTF-16 byte-order mark; expected a text file")
    for enc in ("utf-8", "gb18030"):
        try:
            return _check_decoded(raw.decode(enc), path, enc), enc
        except UnicodeDecodeError:
            pass
    text = raw.decode("utf-8", errors="replace")
    return _check_decoded(text, path, "utf-8 (with errors replaced)"), "utf-8 (with errors replaced)"


def _check_decoded(text, path, enc):
    bad = text.count("\ufffd") + sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    if bad > max(8, 0.01 * len(text)):
        raise DataError(f"{path}: decodes as {enc} to {bad} replacement/control characters out of {len(text)}; "
                        "expected UTF-8, GB18030/GBK or UTF-16 text")
    return text


def normalize_text(text):
    """One newline style, no trailing or full-width indentation spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip(" \t\u3000\xa0") for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def read_text_file(path):
    """(normalised text, encoding) of one corpus file."""
    with open(path, "rb") as f:
        raw = f.read()
    text, enc = detect_and_decode(raw, path)
    text = normalize_text(text)
    if not text.strip():
        raise DataError(f"{path}: contains only whitespace")
    return text, enc


def list_text_files(inputs):
    """Expand files and folders (recursively) into a sorted list of .txt files."""
    files = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.lower().endswith(".txt"))
            if not found:
                raise DataError(f"{p}: folder has no .txt files")
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


# ---- question-answer files ----------------------------------------------------------------------------------
PAIR_KEYS = [("question", "answer"), ("Question", "Answer"), ("q", "a"), ("prompt", "response"),
             ("instruction", "output")]


def record_to_messages(rec, where):
    """One record of any accepted shape to a validated list of {role, content} turns."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key in ("conversations", "messages"):
        if key in rec:
            return _check_turns(rec[key], where, key)
    for qk, ak in PAIR_KEYS:
        if qk in rec or ak in rec:
            q, a = rec.get(qk), rec.get(ak)
            for k, v in ((qk, q), (ak, a)):
                if v is None:
                    raise DataError(f"{where}: missing field '{k}'")
                if not isinstance(v, str):
                    raise DataError(f"{where}: field '{k}' must be a string, got {type(v).__name__}")
            if qk == "instruction" and isinstance(rec.get("input"), str) and rec["input"].strip():
                q = q.rstrip() + "\n" + rec["input"].strip()
            turns = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if isinstance(rec.get("system"), str) and rec["system"].strip():
                turns.insert(0, {"role": "system", "content": rec["system"]})
            return _check_turns(turns, where, f"{qk}/{ak}")
    keys = ", ".join(f"{q}/{a}" for q, a in PAIR_KEYS)
    raise DataError(f"{where}: no known fields; expected one of {keys}, or conversations/messages")


def _check_turns(turns, where, key):
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{key}' must be a non-empty list of turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise DataError(f"{where}: turn {i} must be an object with role and content")
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        role = {"human": "user", "gpt": "assistant", "bot": "assistant"}.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise DataError(f"{where}: turn {i} has role {role!r}; expected system, user or assistant")
        if not isinstance(content, str):
            raise DataError(f"{where}: turn {i} content must be a string, got {type(content).__name__}")
        if not content.strip():
            raise DataError(f"{where}: turn {i} ({role}) is empty")
        out.append({"role": role, "content": content.strip()})
    body = out[1:] if out[0]["role"] == "system" else out
    for i, t in enumerate(body):
        if t["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise DataError(f"{where}: turns must alternate user, assistant (optionally after one system turn); "
                            f"turn {i + len(out) - len(body)} is {t['role']}")
    if not body or body[-1]["role"] != "assistant":
        raise DataError(f"{where}: conversation must end with an assistant turn")
    return out


def read_records(path):
    """Yield (line_number, record, where) from a .jsonl, .json (array), .csv or .tsv file; errors are yielded as
    (line_number, DataError, where) so that --skip_bad can count them."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            text, _ = detect_and_decode(f.read(), path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if ext in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ",")
        if not reader.fieldnames or not any(q in reader.fieldnames for q, _ in PAIR_KEYS):
            raise DataError(f"{path}:1: header must name the two columns, e.g. question,answer")
        for rec in reader:
            yield reader.line_num, rec, f"{path}:{reader.line_num}"
    elif ext == ".json" or (ext != ".jsonl" and text.lstrip().startswith("[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of records")
        for i, rec in enumerate(data):
            yield i + 1, rec, f"{path}: record {i + 1}"
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, DataError(f"{path}:{n}: malformed JSON ({e.msg})"), f"{path}:{n}"
                continue
            yield n, rec, f"{path}:{n}"


def load_conversations(path, skip_bad=False):
    """(conversations, records, bad) from a Q&A file. Each conversation is a list of turns; records are the raw
    objects (to keep extra fields such as a test group); bad is [(line, message)] of skipped records."""
    convs, recs, bad = [], [], []
    for line, rec, where in read_records(path):
        try:
            if isinstance(rec, DataError):
                raise rec
            convs.append(record_to_messages(rec, where))
            recs.append(rec)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append((line, str(e)))
    if not convs:
        raise DataError(f"{path}: no usable question-answer records")
    return convs, recs, bad


# ---- writing outputs without ever leaving half a file -------------------------------------------------------
@contextlib.contextmanager
def atomic_output_dir(final_dir):
    """Yield a temporary folder beside final_dir; on success its files replace those of final_dir one by one
    with os.replace (atomic per file). On any error the temporary folder is removed and final_dir is untouched."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(final_dir)}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        os.makedirs(final_dir, exist_ok=True)
        for name in sorted(os.listdir(tmp), key=lambda n: n == "meta.json" or n.endswith("meta.json")):
            os.replace(os.path.join(tmp, name), os.path.join(final_dir, name))  # meta last: it vouches for the rest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


# ---- batches ------------------------------------------------------------------------------------------------
def to_device(*tensors, device):
    """On CUDA, copy through pinned memory without blocking so the copy overlaps the previous step."""
    if torch.device(device).type == "cuda":
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    return tuple(t.to(device) for t in tensors)


def open_tokens(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: not found (run prepare.py first)")
    return np.memmap(path, dtype=np.uint16, mode="r")


def get_batch_pretrain(tokens, batch_size, block_size, device, generator, sft=None, sft_rows=0):
    """Random windows of block_size+1 tokens from a uint16 memmap; y is x shifted by one. With sft and sft_rows,
    the last sft_rows rows are packed Q&A examples instead, and a loss mask (1 on all corpus tokens, on the
    replies of the Q&A rows) comes back as well; without them the mask is None."""
    if len(tokens) <= block_size + 1:
        raise DataError(f"only {len(tokens)} tokens, fewer than block_size+1={block_size + 1}; lower block_size")
    n_text = batch_size - sft_rows
    starts = torch.randint(len(tokens) - block_size - 1, (n_text,), generator=generator).tolist()
    win = torch.from_numpy(np.stack([tokens[s:s + block_size + 1].astype(np.int64) for s in starts]))
    if not sft_rows:
        return (*to_device(win[:, :-1], win[:, 1:], device=device), None)
    qa, qa_mask = get_batch_packed_sft(sft, sft_rows, block_size, generator)
    win = torch.cat([win, qa])
    mask = torch.cat([torch.ones((n_text, block_size + 1), dtype=torch.long), qa_mask])
    return to_device(win[:, :-1], win[:, 1:], mask[:, 1:], device=device)


class SFTData:
    """Whole SFT examples: tokens (uint16), loss mask (uint8) and offsets (int64, n+1) written by prepare_sft.py."""

    def __init__(self, data_dir, split):
        base = os.path.join(data_dir, f"sft_{split}")
        for suffix in (".bin", ".mask.bin", ".offsets.bin"):
            if not os.path.exists(base + suffix):
                raise DataError(f"{base + suffix}: not found (run prepare_sft.py first)")
        written_with = read_json(os.path.join(data_dir, "sft_meta.json")).get("tokenizer_sha256")
        if written_with and written_with != file_sha256(os.path.join(data_dir, "tokenizer.json")):
            raise DataError(f"{base}.bin was written with another tokenizer than {data_dir}/tokenizer.json "
                            f"(prepare.py ran since); run prepare_sft.py again")
        self.tokens = np.memmap(base + ".bin", dtype=np.uint16, mode="r")
        self.mask = np.memmap(base + ".mask.bin", dtype=np.uint8, mode="r")
        self.offsets = np.fromfile(base + ".offsets.bin", dtype=np.int64)
        self.by_length = np.argsort(np.diff(self.offsets), kind="stable")  # example ids, shortest first

    def __len__(self):
        return len(self.offsets) - 1

    def example(self, i):
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b].astype(np.int64), self.mask[a:b].astype(np.int64)


def get_batch_packed_sft(data, rows, block_size, generator):
    """rows rows of block_size+1 tokens, each random whole SFT examples laid end to end (each starts with the
    document token) and cut at the end; the mask keeps the loss on the replies only. For mixing Q&A into
    pretraining, where every row is full."""
    toks = torch.empty((rows, block_size + 1), dtype=torch.long)
    mask = torch.empty((rows, block_size + 1), dtype=torch.long)
    for row in range(rows):
        filled = 0
        while filled < block_size + 1:
            t, m = data.example(int(torch.randint(len(data), (1,), generator=generator)))
            n = min(len(t), block_size + 1 - filled)
            toks[row, filled:filled + n] = torch.from_numpy(t[:n])
            mask[row, filled:filled + n] = torch.from_numpy(m[:n])
            filled += n
    return toks, mask


def get_batch_sft(data, batch_size, block_size, device, generator, pad_id=0, group_by_length=False,
                  prompt_weight=0.0):
    """batch_size whole examples, cut to block_size+1 tokens and right-padded to the longest. Returns x, y and the
    loss weights aligned with y: 1 on the replies, prompt_weight on the rest of each example, 0 on padding (so it
    never counts). group_by_length draws the batch from a random stretch of examples of similar length (4 batches
    wide), so less of each batch is padding."""
    if group_by_length and len(data) > 4 * batch_size:
        start = int(torch.randint(len(data) - 4 * batch_size + 1, (1,), generator=generator))
        window = torch.randperm(4 * batch_size, generator=generator)[:batch_size] + start
        picks = [int(data.by_length[i]) for i in window]
    else:
        picks = torch.randint(len(data), (batch_size,), generator=generator).tolist()
    examples = [data.example(i) for i in picks]
    width = min(block_size + 1, max(len(t) for t, _ in examples))
    toks = torch.full((batch_size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch_size, width), dtype=torch.float32 if prompt_weight else torch.long)
    for row, (t, m) in enumerate(examples):
        n = min(width, len(t))
        toks[row, :n] = torch.from_numpy(t[:n])
        mask[row, :n] = torch.from_numpy(np.where(m[:n] == 1, 1.0, prompt_weight) if prompt_weight else m[:n])
    return to_device(toks[:, :-1], toks[:, 1:], mask[:, 1:], device=device)
