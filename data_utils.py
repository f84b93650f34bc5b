"""Reading what users hand us (novels, question-answer files) and writing outputs safely; batches.py draws the
training batches from what prepare.py and prepare_sft.py write. No torch here, so the data scripts start fast.

Everything here raises DataError with a one-line message naming the file (and line) for bad input; the scripts
print it and exit with code 2.
"""
import codecs
import csv
import hashlib
import io
import json
import os
import re

from errors import UserError
from fsutil import atomic_write
from grading import normalize_for_keys


class DataError(UserError):
    pass


# the four questions of the course that MiniGLM answers in the app's examples and in out/REPORT.md, each with the
# keys a right answer holds (as a test record's "keys": "A|B" accepts either); iterating gives the questions
COURSE_QUESTIONS = {"介绍一下《天龙八部》的主角": ["萧峰|乔峰", "段誉", "虚竹"],
                    "讲一下射雕英雄传中有名的比武的情节": ["比武招亲|华山论剑"],
                    "小龙女和杨过的关系和故事": ["师徒|师父", "夫妻|恋人|爱情"],
                    "《射雕英雄传》讲了什么故事？": ["郭靖", "黄蓉"]}


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


def dataset_dir(data_root, name):
    """data_root/name for a dataset the data scripts write: one folder name, so that nothing lands beside it."""
    if not name or name in (".", "..") or any(sep and sep in name for sep in (os.sep, os.altsep, "/")):
        raise DataError(f"--dataset {name!r}: expected the name of one folder under {data_root}/ (e.g. mybooks)")
    return os.path.join(data_root, name)


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


# ---- the keys of a test record ------------------------------------------------------------------------------
def parse_keys(value, where):
    """A record's optional "keys": None, or a non-empty list of strings, each "A" or "A|B" (either spelling)."""
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(isinstance(k, str) for k in value)
            and all(normalize_for_keys(alt) for k in value for alt in k.split("|"))):
        raise DataError(f"{where}: field 'keys' must be a non-empty list of non-empty strings (\"A|B\" accepts "
                        f"either spelling), got {json.dumps(value, ensure_ascii=False)}")
    return value
