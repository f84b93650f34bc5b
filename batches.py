"""Training batches from what prepare.py and prepare_sft.py write: windows of the token stream (pretraining) and
whole SFT examples packed into rows, drawn in a background thread (Prefetcher) so the step never waits;
build_batches picks, from train.py's config, which of them a run trains and evaluates on."""
import math
import os
import queue
import threading

import numpy as np
import torch

from configurator import ConfigError
from data_utils import DataError, check_pretrain_data, file_sha256, read_json

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
        self.path = base + ".bin"
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
        if max(state["waiting"], default=-1) >= len(self.data) or state["index"] > len(self.data):
            raise DataError(f"{self.data.path}: the run being resumed drew its examples from a larger set than these "
                            f"{len(self.data)}; resume with the dataset (and sft_mix_extra) it was trained with")
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
        if self.packer and state["packer"] is not None:  # else packed rows newly mixed in at a resume start afresh
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
                if self.device.type == "cuda":  # contiguous first: CUDA copies a strided tensor (x, y are column
                    # slices of one row) through an unpinned temporary, which undoes the pinning and may block
                    batch = {k: v.contiguous().pin_memory() for k, v in batch.items()}
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


def build_batches(cfg, tok, data_dir, rank, world):
    """What a run of train.py trains and evaluates on, from its config: the training batches, fixed evaluation
    batches {'train': [...], 'val': [...]} (the same every evaluation, so evaluations compare), characters per token
    of each split, and training tokens per epoch and per step."""
    B, T, seed = cfg["batch_size"], cfg["block_size"], cfg["seed"]

    def packer(data, packer_seed, reply_start=(0, 1.0), shard=True):
        # training draws each process its own share of an epoch; evaluation reads the same whole split everywhere
        return ExamplePacker(data, T + 1, packer_seed, rank if shard else 0, world if shard else 1, tok.eot_id,
                             cfg["prompt_loss_weight"], reply_start=reply_start)
    if cfg["task"] == "pretrain":
        meta = check_pretrain_data(data_dir)
        splits = {s: open_tokens(os.path.join(data_dir, f"{s}.bin")) for s in ("train", "val")}
        cpt = {s: meta["splits"][s]["chars_per_token"] for s in splits}
        qa_rows = round(B * cfg["sft_mix"])
        # Q&A seen during pretraining too (train split only: SFT's validation stays unseen) gives many more
        # passes over the questions than SFT alone has time for, and teaches the corpus's facts in Q&A form
        if qa_rows and not os.path.exists(os.path.join(data_dir, "sft_meta.json")):
            raise ConfigError(f"sft_mix={cfg['sft_mix']} mixes Q&A into pretraining, but {data_dir} has no SFT data: "
                              f"run python prepare_sft.py --dataset {cfg['dataset']} first, or pass --sft_mix=0")
        qa = None
        if qa_rows:
            # the source's own records only (prepare_sft.py writes them first): with the extra wordings here too,
            # the chat model refused more in-domain questions and answered a little worse (BENCHMARKS.md)
            sft_meta = read_json(os.path.join(data_dir, "sft_meta.json"))
            first = None if cfg["sft_mix_extra"] else sft_meta.get("source_examples")
            qa = packer(SFTData(data_dir, "train", first), seed + 2)
        train = Batches(T, seed + 1000 * rank, splits["train"], B - qa_rows, qa, qa_rows)
        # evaluation on corpus windows only, train and val alike, so that their gap means something
        evals = {s: Batches(T, 12345 + rank, splits[s], B) for s in splits}
        eval_counts = {s: cfg["eval_iters"] for s in splits}
        per_epoch, per_step = len(splits["train"]), (B - qa_rows) * T
    else:
        meta = read_json(os.path.join(data_dir, "sft_meta.json"))
        data = {s: SFTData(data_dir, s) for s in ("train", "val")}
        cpt = {s: meta["splits"][s]["reply_chars"] / max(1, meta["splits"][s]["loss_tokens"]) for s in data}
        # corpus windows replayed among the examples keep what pretraining read, which SFT alone overwrites
        text_rows = round(B * cfg["text_mix"])
        if text_rows >= B:
            raise ConfigError(f"text_mix={cfg['text_mix']} leaves no row of the batch of {B} for the examples")
        corpus = None
        if text_rows:
            check_pretrain_data(data_dir)
            corpus = open_tokens(os.path.join(data_dir, "train.bin"))
        reply_start = (cfg["reply_start_tokens"], cfg["reply_start_weight"])
        train = Batches(T, seed, corpus, text_rows, packer(data["train"], seed, reply_start), B - text_rows)
        evals = {s: Batches(T, 12345, packer=packer(data[s], 12345, shard=False), packed_rows=B) for s in data}
        # one pass over a small split is enough; more would only repeat examples
        eval_counts = {s: min(cfg["eval_iters"], math.ceil(int(data[s].lengths.sum()) / (B * (T + 1)))) for s in data}
        per_epoch, per_step = int(data["train"].lengths.sum()), (B - text_rows) * (T + 1)
    eval_batches = {s: [evals[s].next() for _ in range(eval_counts[s])] for s in evals}
    return train, eval_batches, cpt, per_epoch, per_step * cfg["gradient_accumulation_steps"]
