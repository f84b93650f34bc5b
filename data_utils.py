"""Reading what users hand us (novels, question-answer files), writing outputs safely, and drawing batches.

Everything here raises DataError with a one-line message naming the file (and line) for bad input; the scripts
print it and exit with code 2.
"""
import codecs
import csv
import hashlib
import io
import json
import os
import queue
import re
import threading

import numpy as np
import torch

from errors import UserError
from fsutil import atomic_write


class DataError(UserError):
    pass


# the four questions of the course that MiniGLM answers in the app's examples and in out/REPORT.md
COURSE_QUESTIONS = ["介绍一下《天龙八部》的主角", "讲一下射雕英雄传中有名的比武的情节", "小龙女和杨过的关系和故事",
                    "《射雕英雄传》讲了什么故事？"]


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


def split_document(text, val_fraction):
    """The last val_fraction of a document (cut at a paragraph, else a line, boundary) is validation text."""
    if val_fraction <= 0:
        return text, ""
    cut = int(len(text) * (1 - val_fraction))
    for sep in ("\n\n", "\n"):
        at = text.rfind(sep, 0, cut + 1)
        if at > len(text) // 2:
            return text[:at + len(sep)], text[at + len(sep):]
    return text[:cut], text[cut:]


def split_sections(text):
    """(the text before the first 【header】, [(header, body) of every 【section】]): the default corpus's layout."""
    parts = re.split(r"(【[^】]+】)", text)
    return parts[0], list(zip(parts[1::2], parts[2::2]))


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
def write_json(path, obj):
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


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


def check_pretrain_data(data_dir):
    """meta.json of a dataset written by prepare.py, after checking that its files belong together: meta.json
    records the sha256 of tokenizer.json and it matches, and train.bin and val.bin hold the token counts it
    records. prepare.py removes meta.json before it swaps the other files and writes it last, so an interrupted
    prepare.py fails this check too. Raises DataError, saying to run prepare.py again."""
    again = f"run python prepare.py --dataset {os.path.basename(os.path.normpath(data_dir))} again"
    meta_path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(meta_path):
        raise DataError(f"{meta_path}: not found (prepare.py never finished there); {again}")
    meta = read_json(meta_path)
    recorded = meta.get("tokenizer_sha256") if isinstance(meta, dict) else None
    if not recorded:
        raise DataError(f"{meta_path}: records no tokenizer_sha256 (written by an older prepare.py); {again}")
    tok_path = os.path.join(data_dir, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise DataError(f"{tok_path}: not found; {again}")
    if file_sha256(tok_path) != recorded:
        raise DataError(f"{tok_path} is not the tokenizer that train.bin and val.bin were written with; {again}")
    for split in ("train", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        try:
            tokens = int(meta["splits"][split]["tokens"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{meta_path}: no token count for the {split} split; {again}") from None
        size = os.path.getsize(path) if os.path.exists(path) else None
        if size != 2 * tokens:
            found = "missing" if size is None else f"{size:,} bytes"
            raise DataError(f"{path}: {found}, but meta.json records {tokens:,} tokens ({2 * tokens:,} bytes); "
                            f"{again}")
    return meta


# ---- batches ------------------------------------------------------------------------------------------------
# A batch is a dict of CPU tensors: x and y (B, T) token ids (y is x shifted by one), and, when the batch needs
# them, w (B, T) float loss weights aligned with y (1 on what must be learned, 0 on padding and prompts) and doc
# (B, T) document ids for x (attention stays inside a document; see model.py). Every batch of a run has the same
# shape, so torch.compile compiles once and no memory is re-planned.

def open_tokens(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: not found (run prepare.py first)")
    return np.memmap(path, dtype=np.uint16, mode="r")


class SFTData:
    """Whole SFT examples: tokens (uint16), loss mask (uint8) and offsets (int64, n+1) written by prepare_sft.py."""

    def __init__(self, data_dir, split, first=None):
        """first: read only the first N examples (prepare_sft.py writes the source's own records first)."""
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
        self.offsets = np.fromfile(base + ".offsets.bin", dtype=np.int64)[:None if first is None else first + 1]
        self.lengths = np.diff(self.offsets)

    def __len__(self):
        return len(self.offsets) - 1

    def example(self, i):
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b].astype(np.int64), self.mask[a:b].astype(np.int64)


class ExamplePacker:
    """Rows of whole examples laid end to end, each example its own document. Every example is drawn once per
    epoch, in a new seeded order each epoch (rank r of `world` processes takes every world-th of that order).
    The oldest waiting example goes next if it fits the rest of the row, else the next waiting one that does (a
    lookahead of a few dozen keeps padding to a few percent); the row ends in padding when none fits. An
    example longer than a row is cut at the row's end. Replies weigh 1 (their first reply_start[0] tokens
    reply_start[1]), the rest prompt_weight. state() captures everything, for an exact resume."""

    def __init__(self, data, row_len, seed, rank=0, world=1, pad_id=0, prompt_weight=0.0, lookahead=32,
                 reply_start=(0, 1.0)):
        self.data, self.row_len, self.seed, self.rank, self.world = data, row_len, seed, rank, world
        self.pad_id, self.prompt_weight, self.lookahead = pad_id, prompt_weight, lookahead
        self.reply_start = reply_start
        if len(data) < world:
            raise DataError(f"{len(data)} examples cannot be shared among {world} processes")
        self.epoch, self.index, self.waiting, self._order = 0, 0, [], (None, None)

    def state(self):
        return {"epoch": self.epoch, "index": self.index, "waiting": list(self.waiting)}

    def set_state(self, state):
        self.epoch, self.index, self.waiting = state["epoch"], state["index"], list(state["waiting"])

    def _draw(self):
        epoch, order = self._order
        if epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.data), generator=g)[self.rank::self.world].tolist()
            self._order = (self.epoch, order)
        i = order[self.index]
        self.index += 1
        if self.index == len(order):
            self.epoch, self.index = self.epoch + 1, 0
        return i

    def _weights(self, m):
        """Loss weights of one example from its mask (1 on reply tokens). A reply's first tokens choose which
        memorised answer follows, so they may weigh more than the easy rest."""
        w = np.where(m == 1, 1.0, self.prompt_weight)
        n, head = self.reply_start
        if n and head != 1.0:
            reply, pos = m == 1, np.arange(len(m))
            begins = reply & ~np.r_[False, reply[:-1]]
            into_reply = pos - np.maximum.accumulate(np.where(begins, pos, 0))
            w[reply & (into_reply < n)] = head
        return w

    def rows(self, n):
        """(tokens, weights, doc ids), each (n, row_len)."""
        toks = torch.full((n, self.row_len), self.pad_id, dtype=torch.long)
        weights = torch.zeros((n, self.row_len))
        docs = torch.empty((n, self.row_len), dtype=torch.long)
        for r in range(n):
            filled, doc = 0, 0
            while True:
                while len(self.waiting) < self.lookahead:
                    self.waiting.append(self._draw())
                room = self.row_len - filled
                j = next((j for j, e in enumerate(self.waiting)
                          if min(int(self.data.lengths[e]), self.row_len) <= room), None)
                if j is None:
                    break
                t, m = self.data.example(self.waiting.pop(j))
                k = min(len(t), room)
                toks[r, filled:filled + k] = torch.from_numpy(t[:k])
                weights[r, filled:filled + k] = torch.from_numpy(self._weights(m[:k]))
                docs[r, filled:filled + k] = doc
                filled, doc = filled + k, doc + 1
            docs[r, filled:] = doc  # the padding is a document of its own, weighted 0
        return toks, weights, docs


class Batches:
    """The batches of one split: `text_rows` random windows of a token stream (pretraining; plain causal
    attention, each window one document) and `packed_rows` rows from an ExamplePacker (SFT, or the Q&A mixed into
    pretraining). Windows come from a seeded generator, so state() is the generator's state plus the packer's."""

    def __init__(self, block_size, seed, tokens=None, text_rows=0, packer=None, packed_rows=0):
        if text_rows and len(tokens) <= block_size + 1:
            raise DataError(f"only {len(tokens)} tokens, fewer than block_size+1={block_size + 1}; lower block_size")
        self.block_size, self.tokens, self.text_rows = block_size, tokens, text_rows
        self.packer, self.packed_rows = packer, packed_rows
        self.gen = torch.Generator().manual_seed(seed)

    def state(self):
        return {"generator": self.gen.get_state(), "packer": self.packer.state() if self.packer else None}

    def set_state(self, state):
        self.gen.set_state(state["generator"])
        if self.packer:
            self.packer.set_state(state["packer"])

    def examples_done(self, state):
        """How many packed examples had been put into batches before `state` (None without packed rows)."""
        if not self.packer:
            return None
        per_epoch = len(range(self.packer.rank, len(self.packer.data), self.packer.world))
        p = state["packer"]
        return p["epoch"] * per_epoch + p["index"] - len(p["waiting"])

    def next(self):
        T = self.block_size + 1
        parts = []
        if self.text_rows:
            starts = torch.randint(len(self.tokens) - T, (self.text_rows,), generator=self.gen).tolist()
            win = torch.from_numpy(np.stack([self.tokens[s:s + T].astype(np.int64) for s in starts]))
            parts.append((win, torch.ones(win.shape), torch.zeros(win.shape, dtype=torch.long)))
        if self.packed_rows:
            parts.append(self.packer.rows(self.packed_rows))
        toks, weights, docs = (torch.cat(p) for p in zip(*parts))
        batch = {"x": toks[:, :-1], "y": toks[:, 1:]}
        if self.packed_rows:  # pure corpus windows need neither: every token counts, plain causal attention
            batch.update(w=weights[:, 1:], doc=docs[:, :-1])
        return batch


class Prefetcher:
    """Makes batches in a background thread, `depth` ahead, so the step never waits for the host. On CUDA they
    sit in pinned memory and are copied without blocking, overlapping the step before. next() returns the batch
    on the device and the sampler state from just before it: the state a resumed run must start from if that
    batch has not been trained on yet."""

    def __init__(self, batches, device, depth=4):
        self.batches, self.device = batches, torch.device(device)
        self.queue, self.stopped = queue.Queue(maxsize=depth), threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True, name="batches")
        self.thread.start()

    def _work(self):
        try:
            while not self.stopped.is_set():
                state = self.batches.state()
                batch = self.batches.next()
                if self.device.type == "cuda":
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                self._put((state, batch))
        except Exception as e:  # handed to the training thread, which raises it
            self._put((None, e))

    def _put(self, item):
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self):
        state, batch = self.queue.get()
        if isinstance(batch, Exception):
            raise batch
        return state, {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)
