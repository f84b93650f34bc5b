"""The tokenizer and the chat format.

A byte-level BPE: trained with rustbpe (fast, parallel), run with tiktoken (fast encode/decode), and stored as
plain JSON so that a checkpoint carries an exact copy of it. Byte-level means every string round-trips, rare
characters and emoji included; a Chinese character is 3 bytes, so the merges must first learn whole characters
before they learn words, which is why the default vocabulary is 8,192 rather than a few hundred.

The chat format lives here and only here: every turn is <|role|> content <|end|>, a document starts with
<|endoftext|>, and the model answers after <|assistant|> until it emits <|end|>. Roles are marked by special
tokens that ordinary text can never produce, so nothing ever has to search the text for a letter or a mark.
"""
import base64
import json

import tiktoken

from errors import UserError
from fsutil import atomic_write

# Split text into chunks before BPE; merges never cross a chunk boundary. A run of Chinese characters is one
# \p{L}+ chunk (there are no spaces), punctuation starts its own chunk, digits go at most two at a time.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
# The same, except that every Chinese character is a chunk of its own: merges build whole characters from their bytes
# but never join two, so Chinese text is one token per character (rare characters stay split into bytes), as in a
# character-level model, which learns faster than one on multi-character tokens in its first minutes on novels.
CHAR_SPLIT_PATTERN = r"\p{Han}|" + SPLIT_PATTERN.replace(r"\p{L}+|", r"[^\P{L}\p{Han}]+|", 1)
EOT, SYSTEM, USER, ASSISTANT, END = "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [EOT, SYSTEM, USER, ASSISTANT, END]
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
DEFAULT_VOCAB_SIZE = 8192
MAX_VOCAB_SIZE = 65536  # token ids are stored as uint16


class TokenizerError(UserError):
    pass


class Tokenizer:
    def __init__(self, name, pattern, mergeable_ranks, special_tokens=None):
        """mergeable_ranks: {bytes: rank}. Special tokens get the ids after the last rank unless given."""
        if special_tokens is None:
            first = len(mergeable_ranks)
            special_tokens = {tok: first + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.name, self.pattern = name, pattern
        self.enc = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=mergeable_ranks,
                                     special_tokens=special_tokens)
        self.special = dict(special_tokens)
        if self.enc.n_vocab > MAX_VOCAB_SIZE:
            raise TokenizerError(f"vocabulary of {self.enc.n_vocab} does not fit uint16 (at most {MAX_VOCAB_SIZE})")
        self.eot_id, self.end_id = self.special[EOT], self.special[END]
        self.assistant_id = self.special[ASSISTANT]

    # ---- construction -------------------------------------------------------------------------------------
    @staticmethod
    def check_vocab_size(vocab_size):
        """A vocabulary train() can make: the 256 bytes, at least one merge and the special tokens, within uint16."""
        if not 256 < vocab_size - len(SPECIAL_TOKENS) <= MAX_VOCAB_SIZE - len(SPECIAL_TOKENS):
            raise TokenizerError(f"vocab_size {vocab_size}: expected {257 + len(SPECIAL_TOKENS)} to {MAX_VOCAB_SIZE} "
                                 "(ids are stored as uint16)")

    @classmethod
    def train(cls, texts, vocab_size=DEFAULT_VOCAB_SIZE, per_character=False):
        """Train a byte-level BPE on an iterable of strings; vocab_size counts the special tokens too.
        per_character: never merge two Chinese characters (CHAR_SPLIT_PATTERN)."""
        import rustbpe
        cls.check_vocab_size(vocab_size)
        n_merge_vocab = vocab_size - len(SPECIAL_TOKENS)
        bpe = rustbpe.Tokenizer()
        pattern = CHAR_SPLIT_PATTERN if per_character else SPLIT_PATTERN
        bpe.train_from_iterator(iter(texts), n_merge_vocab, pattern=pattern)
        ranks = {bytes(b): r for b, r in bpe.get_mergeable_ranks()}
        return cls(f"{'chars' if per_character else 'bpe'}{vocab_size}", bpe.get_pattern(), ranks)

    @classmethod
    def gpt2(cls):
        """tiktoken's GPT-2 vocabulary plus our chat tokens (ids 50257..). Needs tiktoken's cached file."""
        try:
            base = tiktoken.get_encoding("gpt2")
        except Exception as e:  # no network: tiktoken cannot download the vocabulary
            raise TokenizerError(
                "tiktoken could not load the GPT-2 vocabulary (" + type(e).__name__ + "). Copy tiktoken's cache "
                "from a machine with internet (run python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\" "
                "there) into the folder named by TIKTOKEN_CACHE_DIR, or use the default --tokenizer bpe") from None
        ranks = base._mergeable_ranks
        special = {EOT: base.eot_token}
        for i, tok in enumerate(SPECIAL_TOKENS[1:]):
            special[tok] = base.n_vocab + i
        return cls("gpt2", base._pat_str, ranks, special)

    # ---- storage: JSON, never pickle ----------------------------------------------------------------------
    def to_dict(self):
        ranks = self.enc._mergeable_ranks
        return {"name": self.name, "pattern": self.pattern, "special_tokens": self.special,
                "mergeable_ranks": [base64.b64encode(b).decode("ascii") for b, _ in
                                    sorted(ranks.items(), key=lambda kv: kv[1])]}

    @classmethod
    def from_dict(cls, d):
        ranks = {base64.b64decode(b): i for i, b in enumerate(d["mergeable_ranks"])}
        return cls(d["name"], d["pattern"], ranks, {k: int(v) for k, v in d["special_tokens"].items()})

    def save(self, path):
        with atomic_write(path) as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise TokenizerError(f"{path}: no tokenizer there (run prepare.py first)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise TokenizerError(f"{path}: not a MiniGLM tokenizer file ({e})") from None

    def describe(self):
        return {"name": self.name, "type": "byte-level BPE (tiktoken)", "vocab_size": self.vocab_size,
                "special_tokens": self.special}

    # ---- encoding -----------------------------------------------------------------------------------------
    @property
    def vocab_size(self):
        return self.enc.n_vocab

    def encode(self, text):
        """Plain text to ids. Special-token strings typed in text stay text: a user cannot forge a turn."""
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts, num_threads=8):
        return self.enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids):
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids):
        return self.enc.decode_bytes(list(ids))


# ---- the chat format ----------------------------------------------------------------------------------------
def render_conversation(tok, messages):
    """A conversation to (ids, mask) for SFT. mask is 1 on each assistant reply and the <|end|> that closes it
    (what the model must learn to say), 0 on the document start, role markers, system and user turns."""
    ids, mask = [tok.eot_id], [0]
    for m in messages:
        content = tok.encode(m["content"])
        ids.append(tok.special[ROLE_TOKENS[m["role"]]])
        mask.append(0)
        ids.extend(content)
        ids.append(tok.end_id)
        learn = 1 if m["role"] == "assistant" else 0
        mask.extend([learn] * (len(content) + 1))
    return ids, mask


def render_for_reply(tok, messages, max_tokens):
    """Tokens that prompt the assistant's next reply: the conversation (ending on a user turn) then <|assistant|>.
    If it is longer than max_tokens, whole turns are dropped from the oldest on (a system turn is kept); if the
    last user turn alone is still too long, its oldest tokens are cut."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while True:
        ids, _ = render_conversation(tok, system + turns)
        ids.append(tok.assistant_id)
        if len(ids) <= max_tokens or len(turns) <= 1:
            break
        turns = turns[2:] if len(turns) > 2 else turns[-1:]  # drop the oldest user/assistant pair
    if len(ids) > max_tokens:  # one user turn longer than the context: keep its end
        head, _ = render_conversation(tok, system)
        keep = max_tokens - len(head) - 3
        if keep < 1:
            raise TokenizerError(f"the system message takes {len(head)} tokens, and the prompt has room for "
                                 f"{max_tokens} (the model's context less the reply's); shorten it")
        last = tok.encode(turns[-1]["content"])[-keep:]
        ids = head + [tok.special[USER]] + last + [tok.end_id, tok.assistant_id]
    return ids
