"""Batches: packed SFT rows, the epoch order, fixed shapes, exact resume, and the background loader."""
import numpy as np
import pytest
import torch

from batches import Batches, ExamplePacker, Prefetcher, SFTData, open_tokens
from data_utils import DataError
from tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny_data(workdir):
    d = workdir / "data" / "tiny"
    return SFTData(str(d), "train"), open_tokens(str(d / "train.bin")), Tokenizer.load(d / "tokenizer.json")


def unpack(toks, weights, docs):
    """The examples of one packed row: [(tokens, weights)] per document, padding excluded."""
    out = []
    for d in torch.unique_consecutive(docs):
        sel = docs == d
        if weights[sel].any():
            out.append((toks[sel].tolist(), weights[sel].tolist()))
    return out


def test_packed_rows_hold_whole_examples_with_their_masks(tiny_data):
    data, _, tok = tiny_data
    packer = ExamplePacker(data, 129, seed=0, pad_id=tok.eot_id, prompt_weight=0.25)
    toks, weights, docs = packer.rows(4)
    assert toks.shape == weights.shape == docs.shape == (4, 129)
    examples = {tuple(data.example(i)[0].tolist()): data.example(i)[1].tolist() for i in range(len(data))}
    n = 0
    for r in range(4):
        for ids, w in unpack(toks[r], weights[r], docs[r]):
            assert ids[0] == tok.eot_id and tuple(ids) in examples  # whole, from its beginning
            mask = examples[tuple(ids)]
            assert w == [1.0 if m == 1 else 0.25 for m in mask]  # replies weigh 1, the rest prompt_weight
            n += 1
        pad = docs[r] == docs[r, -1]
        if not weights[r][pad].any():  # the row's tail is padding: never counted
            assert (toks[r][pad] == tok.eot_id).all()
    assert n >= 8  # several examples share each row
    assert (weights == 1).sum() / weights.numel() > 0.3  # little padding


def test_the_first_tokens_of_every_reply_weigh_reply_start_weight(tiny_data):
    data, _, tok = tiny_data
    packer = ExamplePacker(data, 129, seed=0, pad_id=tok.eot_id, prompt_weight=0.25, reply_start=(3, 4.0))
    toks, weights, docs = packer.rows(4)
    examples = {tuple(data.example(i)[0].tolist()): data.example(i)[1].tolist() for i in range(len(data))}
    replies = 0
    for r in range(4):
        for ids, w in unpack(toks[r], weights[r], docs[r]):
            mask = examples[tuple(ids)]
            since_reply_began = 0
            for m, wi in zip(mask, w):
                since_reply_began = since_reply_began + 1 if m == 1 else 0
                replies += since_reply_began == 1
                assert wi == (0.25 if m != 1 else 4.0 if since_reply_began <= 3 else 1.0)
    assert replies >= 8 and (weights == 4.0).any() and (weights == 1.0).any()


def test_every_example_once_per_epoch_and_ranks_split_it(tiny_data):
    data, _, _ = tiny_data
    seen = []
    for rank in range(2):
        packer = ExamplePacker(data, 129, seed=3, rank=rank, world=2, lookahead=4)
        drawn = []
        while packer.epoch == 0:
            drawn.append(packer._draw())
        seen.append(drawn)
    assert sorted(seen[0] + seen[1]) == list(range(len(data)))  # each example once, by exactly one rank
    epoch1 = ExamplePacker(data, 129, seed=3)
    first = [epoch1._draw() for _ in range(len(data))]
    second = [epoch1._draw() for _ in range(len(data))]
    assert sorted(first) == sorted(second) == list(range(len(data))) and first != second  # reshuffled


def test_packing_draws_examples_evenly_in_the_long_run(tiny_data):
    data, _, _ = tiny_data
    packer = ExamplePacker(data, 129, seed=1)
    counts = np.zeros(len(data), dtype=int)
    for _ in range(60):
        toks, weights, docs = packer.rows(2)
        for r in range(2):
            for ids, _ in unpack(toks[r], weights[r], docs[r]):
                counts[[i for i in range(len(data)) if data.example(i)[0].tolist() == ids][0]] += 1
    assert counts.min() >= counts.max() - 2  # no example is drawn much less often than another


@pytest.mark.parametrize("mix", [0, 2])
def test_every_batch_has_the_same_shape(tiny_data, mix):
    """Fixed shapes are what lets torch.compile compile once: no batch may differ."""
    data, corpus, tok = tiny_data
    if mix:
        b = Batches(64, 0, corpus, 4 - mix, ExamplePacker(data, 65, 0, pad_id=tok.eot_id), mix)
    else:
        b = Batches(64, 0, packer=ExamplePacker(data, 65, 0, pad_id=tok.eot_id), packed_rows=4)
    shapes = {tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(b.next().items())) for _ in range(40)}
    assert len(shapes) == 1
    batch = b.next()
    assert set(batch) == {"x", "y", "w", "doc"} and batch["x"].shape == (4, 64)
    if mix:  # corpus rows: one document, every token counts
        assert (batch["w"][:2] == 1).all() and (batch["doc"][:2] == 0).all()
    assert torch.equal(batch["x"][:, 1:], batch["y"][:, :-1])


def test_pure_corpus_batches_need_no_mask(tiny_data):
    _, corpus, _ = tiny_data
    batch = Batches(64, 0, corpus, 4).next()
    assert set(batch) == {"x", "y"} and batch["x"].shape == (4, 64)


def test_state_restores_the_exact_sequence_and_the_loader_keeps_it(tiny_data):
    data, corpus, tok = tiny_data
    make = lambda: Batches(64, 7, corpus, 2, ExamplePacker(data, 65, 7, pad_id=tok.eot_id), 2)  # noqa: E731
    direct = make()
    for _ in range(5):
        direct.next()
    state = direct.state()
    expected = [direct.next() for _ in range(6)]
    resumed = make()
    resumed.set_state(state)
    loader = Prefetcher(resumed, "cpu", depth=2)
    try:
        got = [loader.next() for _ in range(6)]
    finally:
        loader.close()
    for (st, b), e in zip(got, expected):
        assert all(torch.equal(b[k], e[k]) for k in e)
    again = make()
    again.set_state(got[3][0])  # the state handed out with a batch reproduces that batch
    batch = again.next()
    assert all(torch.equal(batch[k], expected[3][k]) for k in expected[3])


def test_a_resume_onto_fewer_examples_is_a_data_error(tiny_data, workdir):
    """A run resumed on another dataset (or sft_mix_extra) whose examples its saved place cannot index: one line
    naming the file, not an IndexError in the loader thread."""
    data, _, tok = tiny_data
    packer = ExamplePacker(data, 65, 0, pad_id=tok.eot_id)
    packer.rows(2)
    state = packer.state()
    assert max(state["waiting"]) >= 5
    fewer = SFTData(str(workdir / "data" / "tiny"), "train", first=5)
    with pytest.raises(DataError, match=r"sft_train\.bin: the run being resumed drew its examples from a larger set"):
        ExamplePacker(fewer, 65, 0, pad_id=tok.eot_id).set_state(state)
    ExamplePacker(data, 65, 0, pad_id=tok.eot_id).set_state(state)  # the same examples resume


def test_loader_errors_reach_the_training_thread(tiny_data):
    _, corpus, _ = tiny_data

    class Broken(Batches):
        def next(self):
            raise RuntimeError("disk gone")
    loader = Prefetcher(Broken(64, 0, corpus, 2), "cpu")
    with pytest.raises(RuntimeError, match="disk gone"):
        loader.next()
    loader.close()
