"""Grading an answer the way a reader does: does it hold the key facts, does it decline, and does it read as
finished text (not empty, garbled, repeating itself or cut off mid-sentence). eval_rouge.py scores the test with
it, report.py and bench/book_questions.py the course's questions. No torch, so anything may import it.
"""
import re
import unicodedata

SENTENCE_END = tuple("。！？!?…”」』）)")
REPEAT_NGRAM, REPEAT_THRESHOLD = 4, 0.2
# MiniGLM's honest refusal declines in its first sentence ("抱歉，《笑傲江湖》不在我的知识范围内。", "这个问题超出了我的
# 知识范围。", "我无法获取……实时信息"). An answer that gives the facts and then notes a limit is no refusal.
DECLINE = re.compile(r"不在我的知识范围|超出了?我的(知识范围|能力)|无法(获取|回答)|不能上网|只能用中文"
                     r"|我不(知道|清楚|了解)")


def normalize_for_keys(text):
    """Fold full-width forms (NFKC) and Latin case; drop whitespace and punctuation, 《》 and quotes included."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def count_keys_hit(answer, keys):
    """How many of the keys the answer holds, after normalize_for_keys on both (an "A|B" key: either)."""
    text = normalize_for_keys(answer)
    return sum(any(normalize_for_keys(alt) in text for alt in key.split("|")) for key in keys)


def repeated_ngram_share(text, n=REPEAT_NGRAM):
    """Share of the character n-grams of an answer that already occurred earlier in it (0 for no repeats)."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def answer_checks(answer):
    """The flaws a reader sees at a glance, each True or False: empty, garbled (U+FFFD or control characters),
    repeating (over a fifth of its 4-grams seen before in it), truncated (no sentence-final mark at the end)."""
    return {"empty": not answer.strip(),
            "garbled": "\ufffd" in answer or bool(re.search(r"[\x00-\x08\x0b-\x1f]", answer)),
            "repeating": repeated_ngram_share(answer) > REPEAT_THRESHOLD,
            "truncated": bool(answer.strip()) and not answer.strip().endswith(SENTENCE_END)}


def holds_keys_as_finished_text(answer, keys):
    """A right answer to a question with keys: every key in it, and none of answer_checks' flaws."""
    return count_keys_hit(answer, keys) == len(keys) and not any(answer_checks(answer).values())


def is_refusal(answer):
    """Whether the answer opens by declining (抱歉/对不起, or DECLINE in its first sentence)."""
    answer = answer.strip()
    first_sentence = re.split(r"(?<=[。！？!?])", answer, maxsplit=1)[0]
    return answer.startswith(("抱歉", "对不起")) or bool(DECLINE.search(first_sentence))
