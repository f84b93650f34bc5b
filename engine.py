"""The inference engine: load a checkpoint, render prompts, generate tokens with a KV cache, stream text.

sample.py, eval_rouge.py and app.py all generate through Engine. An SFT checkpoint is a chat model (the prompt is
the conversation in the chat format of tokenizer.py and the reply ends at <|end|>); a pretraining checkpoint is a
text completer (the prompt is the text, generation ends at <|endoftext|>) unless asked as a chat model (chat=True:
its pretraining mixed in Q&A rows). Either stops at a role token too, so a reply never contains <|system|>,
<|user|> or <|assistant|>.
"""
import codecs
import math
import time
from dataclasses import dataclass, replace

import torch

from checkpoint import load_checkpoint
from errors import UserError
from model import KVCache, pick_device
from tokenizer import ROLE_TOKENS, render_for_reply


class SamplingError(UserError):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# each knob: the check, and what it expects in words (shared by sample.py, eval_rouge.py, app.py and servers)
SAMPLING_RANGES = {
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "an integer, 1 or more"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number, 0 (greedy) or more"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer, 0 (off) or more"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number above 0 and at most 1 (1 = off)"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number above 0 (1 = off)"),
    "seed": (lambda v: v is None or _is_int(v), "an integer"),
}


@dataclass
class SamplingParams:
    """The sampling knobs; values out of range raise SamplingError, one line naming the knob."""
    max_new_tokens: int = 256
    temperature: float = 0.7        # 0 means greedy (deterministic)
    top_k: int = 50                 # 0 means no top-k cut
    top_p: float = 0.9              # 1.0 means no nucleus cut
    repetition_penalty: float = 1.1  # > 1 discourages tokens the reply already used (not the prompt's)
    seed: int | None = None

    def __post_init__(self):
        for name, (ok, expected) in SAMPLING_RANGES.items():
            value = getattr(self, name)
            if not ok(value):
                raise SamplingError(f"{name}={value!r}: expected {expected}")


# UTF-8 decoder states between tokens: how many continuation bytes a character still needs, and the range the
# next one must fall in (E0, ED, F0 and F4 narrow the first continuation byte; see RFC 3629).
UTF8_STATES = [(0, 0, 0), (1, 0x80, 0xBF), (2, 0x80, 0xBF), (3, 0x80, 0xBF),
               (2, 0xA0, 0xBF), (2, 0x80, 0x9F), (3, 0x90, 0xBF), (3, 0x80, 0x8F)]
UTF8_LEAD = {0xE0: 4, 0xED: 5, 0xF0: 6, 0xF4: 7}


def _utf8_step(state, byte):
    """The state after one more byte, or None if the bytes are no longer valid UTF-8."""
    need, lo, hi = UTF8_STATES[state]
    if need:
        return need - 1 if lo <= byte <= hi else None
    if byte < 0x80:
        return 0
    if 0xC2 <= byte <= 0xDF:
        return 1
    if 0xE0 <= byte <= 0xEF:
        return UTF8_LEAD.get(byte, 2)
    if 0xF0 <= byte <= 0xF4:
        return UTF8_LEAD.get(byte, 3)
    return None


def utf8_tables(tok, vocab_size):
    """allowed[s, t]: token t may come next in UTF-8 state s; after[s, t]: the state after it. Masking with these
    keeps every reply valid UTF-8: a byte-level model could otherwise put together bytes that are no character at
    all (shown as U+FFFD). Special tokens (the end of a turn) may only come between characters."""
    n = len(UTF8_STATES)
    allowed = torch.zeros((n, vocab_size), dtype=torch.bool)
    after = torch.zeros((n, vocab_size), dtype=torch.long)
    specials = set(tok.special.values())
    for t in range(min(vocab_size, tok.vocab_size)):
        if t in specials:
            allowed[0, t] = True
            continue
        try:
            data = tok.decode_bytes([t])
        except Exception:  # an id the tokenizer does not have
            continue
        for start in range(n):
            state = start
            for byte in data:
                state = _utf8_step(state, byte)
                if state is None:
                    break
            if state is not None:
                allowed[start, t], after[start, t] = True, state
    return allowed, after


def sample_next(logits, generated, p, generator, allowed=None):
    """Next token ids (B,) from last-position logits (B, V). generated: (B, n) tokens of the reply so far;
    allowed: (B, V) tokens that may come next (None: all)."""
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if p.repetition_penalty != 1.0 and generated.shape[1]:
        seen = torch.gather(logits, 1, generated)
        seen = torch.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        logits = logits.scatter(1, generated, seen)
    if p.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / p.temperature
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > p.top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def utf8_pieces(tok, token_ids):
    """Text pieces from a stream of token ids. Byte-level tokens can split a character's bytes; those are held
    back until the character is complete, so no piece ever ends in half a character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for t in token_ids:
        piece = decoder.decode(tok.decode_bytes([t]))
        if piece:
            yield piece


def add_sampling_args(ap, temperature=None):
    """The sampling knobs of sample.py and eval_rouge.py, and how they load the checkpoint."""
    d = SamplingParams()
    ap.add_argument("--max_new_tokens", type=int, default=d.max_new_tokens)
    ap.add_argument("--temperature", type=float, default=d.temperature if temperature is None else temperature,
                    help="0 for greedy")
    ap.add_argument("--top_k", type=int, default=d.top_k)
    ap.add_argument("--top_p", type=float, default=d.top_p)
    ap.add_argument("--repetition_penalty", type=float, default=d.repetition_penalty)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="of weights and KV cache")
    ap.add_argument("--chat", action="store_true", help="ask a pretraining checkpoint as a chat model (its "
                                                       "pretraining mixed in Q&A rows: sft_mix)")


def sampling_params(args):
    """SamplingParams from add_sampling_args' options; a value out of range raises SamplingError."""
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)


class Engine:
    def __init__(self, model, tokenizer, info=None, device="cpu", chat=None):
        self.model, self.tok, self.info, self.device = model.eval(), tokenizer, info or {}, device
        self.block_size = model.config.block_size
        # chat=True asks a pretraining checkpoint in the chat format (one whose pretraining mixed in Q&A, sft_mix)
        self.is_chat = self.info.get("task") == "sft" if chat is None else chat
        # a reply ends at <|end|>, <|endoftext|> or any role token: it never shows one as text
        self.stop_ids = {tokenizer.end_id, tokenizer.eot_id, *(tokenizer.special[t] for t in ROLE_TOKENS.values())}
        self.last_stats = {"tokens": 0, "seconds": 0.0}
        vocab = model.config.vocab_size
        self.utf8_allowed, self.utf8_after = (t.to(device) for t in utf8_tables(tokenizer, vocab))

    @classmethod
    def from_checkpoint(cls, path, device="auto", dtype="float32", chat=None):
        """dtype: the weights' and the KV cache's type; bfloat16 halves memory and is faster on GPUs, float32
        (the default until measured otherwise) gives the answers the model was evaluated with. chat: as for
        Engine (None: SFT checkpoints are chat models, pretraining ones complete text)."""
        device = pick_device(device)
        model, tok, info, folder = load_checkpoint(path, device)
        engine = cls(model.to(getattr(torch, dtype)), tok, info, device, chat)
        engine.folder = folder
        return engine

    # ---- tokens -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_tokens(self, prompts, params, use_cache=True):
        """Yield, step by step, a list with each prompt's new token (None once that row has stopped).
        Prompts of different lengths are left-padded; padded keys are masked, and since rotary positions only
        matter relative to each other, a row's tokens come out as they would alone."""
        B = len(prompts)
        max_prompt = self.block_size - 1
        prompts = [p[-max_prompt:] for p in prompts]  # keep the end of an over-long prompt
        width = max(len(p) for p in prompts)
        pad = self.tok.eot_id
        tokens = torch.full((B, width), pad, dtype=torch.long, device=self.device)
        real = torch.zeros((B, width), dtype=torch.bool, device=self.device)
        for i, p in enumerate(prompts):
            tokens[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            real[i, width - len(p):] = True
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        generated = torch.zeros((B, 0), dtype=torch.long, device=self.device)
        alive = torch.ones(B, dtype=torch.bool, device=self.device)
        utf8_state = torch.zeros(B, dtype=torch.long, device=self.device)  # each reply starts between characters
        cache = None
        for _ in range(params.max_new_tokens):
            if use_cache and (cache is None or cache.pos >= self.block_size):
                # (re)fill the cache; past the context length keep the last half as the new window
                keep = tokens.shape[1] if cache is None else self.block_size // 2
                dtype = next(self.model.parameters()).dtype
                cache = KVCache(self.model.config, B, self.block_size, self.device, dtype)
                cache.key_valid[:, :keep] = real[:, -keep:]
                logits, _ = self.model(tokens[:, -keep:], cache=cache)
            elif use_cache:
                logits, _ = self.model(tokens[:, -1:], cache=cache)
            else:  # recompute the whole window each step (the slow baseline the cache is measured against)
                window = min(tokens.shape[1], self.block_size)
                if bool(real[:, -window:].all()):
                    logits, _ = self.model(tokens[:, -window:])
                else:
                    c = KVCache(self.model.config, B, window, self.device, next(self.model.parameters()).dtype)
                    c.key_valid[:] = real[:, -window:]
                    logits, _ = self.model(tokens[:, -window:], cache=c)
            nxt = sample_next(logits[:, -1, :], generated, params, gen, self.utf8_allowed[utf8_state])
            utf8_state = self.utf8_after[utf8_state, nxt]
            nxt = torch.where(alive, nxt, torch.full_like(nxt, pad))
            out = [int(t) if a else None for t, a in zip(nxt.tolist(), alive.tolist())]
            stopped = torch.tensor([t in self.stop_ids for t in nxt.tolist()], device=self.device)
            alive = alive & ~stopped
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            real = torch.cat([real, torch.ones((B, 1), dtype=torch.bool, device=self.device)], dim=1)
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            yield out
            if not bool(alive.any()):
                break

    def generate(self, prompts, params, use_cache=True):
        """New tokens of each prompt (without the stop token), and the stats of the run."""
        t0 = time.perf_counter()
        outs = [[] for _ in prompts]
        n = 0
        for step in self.generate_tokens(prompts, params, use_cache):
            for i, t in enumerate(step):  # a row yields None once it has stopped
                if t is None:
                    continue
                n += 1
                if t not in self.stop_ids:
                    outs[i].append(t)
        self.last_stats = {"tokens": n, "seconds": time.perf_counter() - t0}
        return outs

    # ---- text ---------------------------------------------------------------------------------------------
    def prompt_ids(self, messages_or_text, params):
        """Chat models get the rendered conversation (oldest turns dropped to leave room for the reply);
        completers get the text (for a conversation, its last user message)."""
        room = max(8, self.block_size - min(params.max_new_tokens, self.block_size // 2))
        if isinstance(messages_or_text, str):
            messages_or_text = [{"role": "user", "content": messages_or_text}] if self.is_chat else messages_or_text
        if self.is_chat:
            return render_for_reply(self.tok, messages_or_text, room)
        text = messages_or_text if isinstance(messages_or_text, str) else messages_or_text[-1]["content"]
        return ([self.tok.eot_id] + self.tok.encode(text))[-room:]

    def stream(self, messages_or_text, params=None):
        """Yield the reply as text pieces while it is generated (see utf8_pieces)."""
        params = params or SamplingParams()
        ids = self.prompt_ids(messages_or_text, params)
        t0, n = time.perf_counter(), 0

        def reply_tokens():
            nonlocal n
            for step in self.generate_tokens([ids], params):
                t = step[0]
                if t is None or t in self.stop_ids:
                    n += t is not None
                    return
                n += 1
                yield t

        for piece in utf8_pieces(self.tok, reply_tokens()):
            self.last_stats = {"tokens": n, "seconds": time.perf_counter() - t0}
            yield piece
        self.last_stats = {"tokens": n, "seconds": time.perf_counter() - t0}

    def reply(self, messages_or_text, params=None):
        return "".join(self.stream(messages_or_text, params))

    def reply_batch(self, inputs, params=None, batch_size=16):
        """Replies to many questions (or texts) at once, in batches; greedy when params.temperature is 0."""
        params = params or SamplingParams()
        answers, tokens, seconds = [], 0, 0.0
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            p = replace(params, seed=None if params.seed is None else params.seed + i)
            outs = self.generate([self.prompt_ids(x, p) for x in chunk], p)
            tokens += self.last_stats["tokens"]
            seconds += self.last_stats["seconds"]
            answers += [self.decode_reply(o) for o in outs]
        self.last_stats = {"tokens": tokens, "seconds": seconds}
        return answers

    def decode_reply(self, ids):
        """Whole reply text; an incomplete character at the very end (cut by max_new_tokens) is dropped."""
        return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(self.tok.decode_bytes(ids))
