"""The embedded default data in data/jinyong/ loads with the project's own readers and meets its promises."""
import glob
import os
import re

import pytest

from conftest import REPO
from data_utils import COURSE_QUESTIONS, load_conversations, read_text_file
from grading import count_keys_hit, is_refusal, normalize_for_keys

DATA = os.path.join(REPO, "data", "jinyong")
END = tuple("。！？…”」）")
REFUSAL = re.compile(r"不在我的知识范围|超出了我的(知识范围|能力)|无法获取")
TAIL = "我是MiniGLM，只了解金庸的《射雕英雄传》《神雕侠侣》《天龙八部》，可以问我这三部书里的人物和故事。"


def books_text():
    """The corpus and its re-telling: what the model reads about the books."""
    return "".join(read_text_file(f)[0] for d in ("corpus", "rewrites")
                   for f in glob.glob(os.path.join(DATA, d, "kb_*.txt")))


def norm(q):
    return re.sub(r"[\s，。？！、“”《》?!,.]", "", q)


def test_corpus_is_large_enough_and_reads_cleanly():
    files = sorted(glob.glob(os.path.join(DATA, "corpus", "kb_*.txt")))
    assert len(files) == 6
    texts = [read_text_file(f)[0] for f in files]
    han = sum(len(re.findall(r"[\u4e00-\u9fff]", t)) for t in texts)
    assert han >= 150_000
    sections = [s for t in texts for s in re.findall(r"^【(.+?)】$", t, flags=re.M)]
    people = [s for f, t in zip(files, texts) if "people" in f for s in re.findall(r"^【(.+?)】$", t, flags=re.M)]
    assert len(sections) >= 400 and len(people) >= 150


def test_sft_set_loads_and_covers_what_was_promised():
    convs, recs, bad = load_conversations(os.path.join(DATA, "sft.jsonl"))
    assert not bad
    single = [c for c in convs if len(c) == 2]
    multi = [c for c in convs if len(c) > 2]
    assert len(single) >= 1500 and len(multi) >= 100
    assert {r.get("book") for r in recs} == {"射雕英雄传", "神雕侠侣", "天龙八部", "其他"}
    assert {r.get("category") for r in recs} == {"人物介绍", "情节", "人物关系", "其他"}
    replies = [t["content"] for c in convs for t in c if t["role"] == "assistant"]
    assert all(15 <= len(r) <= 220 and r.endswith(END) for r in replies)
    answer_of = {norm(c[0]["content"]): c[1]["content"] for c in single}
    for q, keys in COURSE_QUESTIONS.items():  # the SFT answer of each course question holds its key facts
        assert count_keys_hit(answer_of[norm(q)], keys) == len(keys), q


def test_a_single_turn_question_has_one_reply():
    """Two single-turn records that ask one question with two replies leave the model to pick one at random (and one
    of them was written for another question: 刀白凤是怎么死的？ got the answer about 段正淳's end). A conversation's
    opener may reword a single-turn question's reply: giving those the single-turn reply cost `seen` 0.025
    (BENCHMARKS.md), and a follow-up's reply rests on the turns before it."""
    replies = {}
    for name in ("sft.jsonl", "sft_wordings.jsonl"):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        for question, reply in [[t["content"] for t in c] for c in convs if len(c) == 2]:
            assert replies.setdefault(norm(question), reply) == reply, (name, question)


def test_test_set_is_held_out_and_has_both_groups():
    convs, recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    groups = [r["group"] for r in recs]
    assert len(convs) >= 200 and groups.count("seen") >= 100 and groups.count("corpus_only") >= 90
    train, _, _ = load_conversations(os.path.join(DATA, "sft.jsonl"))
    train_q = {norm(t["content"]) for c in train for t in c if t["role"] == "user"}
    assert not [c[0]["content"] for c in convs if norm(c[0]["content"]) in train_q]


def test_corpus_only_facts_are_not_the_answer_to_a_like_sft_question():
    """`corpus_only` asks what only the corpus states. 34 of its questions had moved to `seen` once the SFT set had
    grown to state their facts (BENCHMARKS.md: every right answer a copy): a chat model copies SFT answers, and the
    answer to the most similar SFT question (bench/lookup_baseline.py) then held every key of 16 of them. Single-
    character keys make a few accidental matches possible, so up to 2 of the group are let through."""
    import sys
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from eval_rouge import load_test
    from lookup_baseline import Lookup
    convs = []
    for name in ("sft.jsonl", "sft_wordings.jsonl"):
        convs += [c for c in load_conversations(os.path.join(DATA, name))[0] if len(c) == 2]
    lookup = Lookup([c[0]["content"] for c in convs], [c[1]["content"] for c in convs])
    corpus_only = [(q, keys) for q, _, group, keys in load_test(os.path.join(DATA, "test.jsonl"))
                   if group == "corpus_only"]
    given_away = [q for q, keys in corpus_only if count_keys_hit(lookup.answer(q), keys) == len(keys)]
    assert len(given_away) <= 2, given_away


def replies_holding_every_key(replies, test_records):
    """(question, reply) for each reply that holds every key of a test record, with eval_rouge's normalisation:
    such a reply gives that record's fact away. Each reply is normalised once (the sets are thousands of rows)."""
    replies = [normalize_for_keys(x) for x in replies]
    found = []
    for r in test_records:
        alts = [[normalize_for_keys(a) for a in k.split("|")] for k in r["keys"]]
        found += [(r["question"], x) for x in replies if all(any(a in x for a in alt) for alt in alts)]
    return found


def load_single_fact_rows(name, min_rows, reply_chars):
    """(replies, normalised questions) of an sft_extra/ file of single-turn rows about all three novels, each
    question asked once and each reply reply_chars = (shortest, longest) long, ending a sentence."""
    convs, recs, bad = load_conversations(os.path.join(DATA, "sft_extra", name))
    assert not bad and len(convs) >= min_rows and all(len(c) == 2 for c in convs)
    assert {r.get("book") for r in recs} == {"射雕英雄传", "神雕侠侣", "天龙八部"}
    replies = [c[1]["content"] for c in convs]
    assert all(reply_chars[0] <= len(r) <= reply_chars[1] and r.endswith(END) for r in replies)
    asked = [norm(c[0]["content"]) for c in convs]
    assert len(set(asked)) == len(asked)
    return replies, asked


def test_extra_single_fact_set_loads_and_stays_held_out():
    replies, asked = load_single_fact_rows("single_facts.jsonl", 3000, (8, 70))
    test, test_recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    assert not {norm(c[0]["content"]) for c in test} & set(asked)
    # no reply gives away a test fact: it never holds all the keys of a test question
    assert not replies_holding_every_key(replies, [r for r in test_recs if "keys" in r])


def test_extra_minor_people_are_new_to_sft_and_test_and_give_no_corpus_only_fact_away():
    """sft_extra/minor_people.jsonl: introductions of people the corpus names but no SFT or test question asks about."""
    convs, recs, bad = load_conversations(os.path.join(DATA, "sft_extra", "minor_people.jsonl"))
    assert not bad and len(convs) >= 60 and all(len(c) == 2 for c in convs)
    corpus = "".join(read_text_file(f)[0] for f in glob.glob(os.path.join(DATA, "corpus", "kb_*.txt")))
    sft, _, _ = load_conversations(os.path.join(DATA, "sft.jsonl"))
    test, test_recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    asked = "\n".join([t["content"] for c in sft + test for t in c if t["role"] == "user"]
                      + [k for r in test_recs for k in r.get("keys", [])])
    for c, r in zip(convs, recs):
        name = r["name"]
        assert name in c[0]["content"] and name in corpus and name not in asked, name
        assert c[1]["content"].startswith(name) and 20 <= len(c[1]["content"]) <= 90
    replies = [c[1]["content"] for c in convs]
    # facts only the corpus states stay out of SFT: no reply holds all the keys of a corpus_only test question
    corpus_only = [r for r in test_recs if r.get("group") == "corpus_only" and "keys" in r]
    assert not replies_holding_every_key(replies, corpus_only)


def test_extra_fact_set_asks_what_the_sft_and_test_sets_do_not_and_states_the_corpus_only_facts():
    """sft_extra/facts.jsonl: the facts of every corpus section, one short answer each asked three ways, written from
    the sections alone (the writers never saw the SFT or test set); not read by default (BENCHMARKS.md: SFT coverage of
    every fact). It states nearly every `corpus_only` fact: appended to the SFT set, those questions are seen ones."""
    replies, asked = load_single_fact_rows("facts.jsonl", 8000, (12, 130))
    sft = [c for name in ("sft.jsonl", "sft_wordings.jsonl") for c in load_conversations(os.path.join(DATA, name))[0]]
    test, test_recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    assert not set(asked) & {norm(t["content"]) for c in sft + test for t in c if t["role"] == "user"}
    corpus_only = [r for r in test_recs if r.get("group") == "corpus_only" and "keys" in r]
    given_away = {q for q, _ in replies_holding_every_key(sorted(set(replies)), corpus_only)}
    assert len(given_away) >= 0.8 * len(corpus_only)


def test_user_questions_are_keyed_by_their_own_reference():
    """user_questions.jsonl: 80 questions a new user might ask, written from the corpus sections alone (never the SFT
    or test set), for `eval_rouge.py --test`: every key (one spelling of it) is in the reference, none in the question."""
    convs, recs, bad = load_conversations(os.path.join(DATA, "user_questions.jsonl"))
    assert not bad and len(convs) == 80 and {r["group"] for r in recs} == {"user"}
    for c, r in zip(convs, recs):
        assert 1 <= len(r["keys"]) <= 3, r
        for key in r["keys"]:
            spellings = key.split("|")
            assert any(x in c[1]["content"] for x in spellings) and not any(x in c[0]["content"] for x in spellings), r


def test_extra_wordings_only_reword_sft_questions_and_stay_held_out():
    """New questions for the SFT set's own answers (no new answer, so no new fact), none equal to an SFT question
    or a test question, none asked twice."""
    convs, recs, bad = load_conversations(os.path.join(DATA, "sft_wordings.jsonl"))
    assert not bad and len(convs) >= 8000 and all(len(c) == 2 for c in convs)
    sft, _, _ = load_conversations(os.path.join(DATA, "sft.jsonl"))
    sft_answers = {s[1]["content"] for s in sft if len(s) == 2}
    assert all(c[1]["content"] in sft_answers for c in convs)
    asked = [norm(c[0]["content"]) for c in convs]
    assert len(set(asked)) == len(asked)
    assert not set(asked) & {norm(t["content"]) for c in sft for t in c if t["role"] == "user"}
    test, _, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    assert not set(asked) & {norm(c[0]["content"]) for c in test}


def test_a_yes_answer_only_answers_a_yes_or_no_question():
    """An answer that opens with 是的 or 不是 was written for a yes-or-no question; given to 一灯大师出家前是什么身份？
    it taught the model to say yes to a question that asks for a name."""
    yes_no = re.compile(r"吗|吧|是不是|有没有|会不会|能不能|算不算|对不对|是否|没有|是哪")
    for name in ("sft.jsonl", "sft_wordings.jsonl"):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        for c in convs:
            turns = [t for t in c if t["role"] != "system"]
            for q, a in zip(turns[::2], turns[1::2]):
                if re.match(r"(是的|不是)[。，]", a["content"]):
                    assert yes_no.search(q["content"]), (name, q["content"])


def test_reference_answers_carry_keys_they_contain():
    _, recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    in_domain = [r for r in recs if r["group"] != "out_of_domain"]
    assert in_domain and all("keys" in r for r in in_domain)
    for r in in_domain:
        keys = r["keys"]
        assert isinstance(keys, list) and 1 <= len(keys) <= 3, r["question"]
        for key in keys:
            alts = key.split("|")
            assert all(a.strip() == a and a for a in alts), (r["question"], key)
            assert any(a in r["answer"] for a in alts), (r["question"], key)   # the reference itself is right
            assert not any(a in r["question"] for a in alts), (r["question"], key)  # not just echoing the question


def test_out_of_domain_questions_are_refused_in_the_sft_style():
    _, recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    ood = [r for r in recs if r["group"] == "out_of_domain"]
    assert len(ood) >= 15
    for r in ood:
        assert "keys" not in r and r["book"] == r["category"] == "其他", r["question"]
        assert REFUSAL.search(r["answer"]) and r["answer"].endswith(TAIL), r["question"]
    # each refusal opens the way the SFT set's refusals open (a taught opening, or the one naming another novel)
    _, train, _ = load_conversations(os.path.join(DATA, "sft.jsonl"))
    taught = {r["answer"][:-len(TAIL)] for r in train if r.get("answer", "").endswith(TAIL)}
    for r in ood:
        opening = r["answer"][:-len(TAIL)]
        assert opening in taught or re.fullmatch(r"抱歉，(\w+所在的)?《\w+》不在我的知识范围内。", opening), opening


def test_a_refusal_never_names_someone_the_corpus_tells_of():
    """A refusal that places a person in another novel ("抱歉，X所在的《Y》...") is right only if the corpus says nothing
    of X: the corpus ends 【张君宝】 with his founding 武当派 as 张三丰, so 张三丰创立了哪个门派？ is answerable (and was
    a test refusal until 2026-12-05)."""
    corpus = books_text()
    named = set()
    for name in ("sft.jsonl", "sft_wordings.jsonl", "test.jsonl"):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        named |= {m for c in convs for t in c if t["role"] == "assistant"
                  for m in re.findall(r"抱歉，(\w+?)所在的《", t["content"])}
    assert len(named) >= 5 and not [x for x in named if x in corpus]


def test_the_novels_medicines_and_real_ones_are_asked_the_same_way():
    """A medicine of the novels asked as a medicine (X是什么药？) must be answered and a real one declined, so that
    the name decides, not the words: with the medical refusals the only questions asked so, 断肠草是什么药？ and
    九花玉露丸是什么药？ were declined (BENCHMARKS.md, "Medicines asked as medicines")."""
    ask = re.compile(r"^(.+?)(是(一种)?什么(药|毒药)|这种药吃了有什么用|这味药能治什么|有什么(用|药效)|是治什么的|"
                     r"能治什么(病|伤)?)？$")
    corpus = books_text()
    answered, declined = [], []
    for name in ("sft.jsonl", "sft_wordings.jsonl"):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        for c in convs:
            m = ask.match(c[0]["content"]) if len(c) == 2 else None
            if m and "医疗用药" in c[1]["content"]:
                declined.append(m.group(1))
            elif m and "药" in c[0]["content"] and not REFUSAL.search(c[1]["content"]):
                answered.append(m.group(1))
    assert len(answered) >= 6 and all(x[-3:] in corpus for x in answered), answered   # 断肠草, 三笑逍遥散 …
    assert len(declined) >= 10 and not [x for x in declined if x in corpus], declined  # 阿司匹林 …, none in the books


def test_adaptation_questions_get_what_the_corpus_states():
    """The corpus tells of each novel's film and TV versions (神雕: the 1983 and 1995 TVB ones): a reply that declines
    the whole question taught the model to refuse an in-domain test question. Only what the corpus leaves out (who
    played whom, which version is best) is declined, after the facts."""
    asked = 0
    for name in ("sft.jsonl", "sft_wordings.jsonl"):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        for c in convs:
            q, a = c[0]["content"], c[-1]["content"]
            # about these novels' screen versions (推荐几部好看的电影 stays a refusal)
            if re.search("电视剧|电影|影视|翻拍|谁演|演员", q) and re.search("射雕|神雕|天龙|金庸|郭靖|杨过|萧峰|乔峰", q):
                asked += 1
                assert not is_refusal(a) and re.search(r"改编|拍成", a), q
                if re.search("射雕|神雕", a):  # the corpus dates these two novels' best-known TV versions
                    assert "一九八三年" in a, q
    assert asked >= 10


def all_texts():
    """(source, sentence) of every corpus and re-telling sentence and every SFT/test answer sentence."""
    folders = ("corpus", "rewrites", "rewrites_extra", "val")
    files = [f for d in folders for f in sorted(glob.glob(os.path.join(DATA, d, "kb_*.txt")))]
    texts = [(f, read_text_file(f)[0]) for f in files]
    extras = ("sft_extra/single_facts.jsonl", "sft_extra/minor_people.jsonl", "sft_extra/facts.jsonl",
              "user_questions.jsonl")
    for name in ("sft.jsonl", "test.jsonl", *extras):
        convs, _, _ = load_conversations(os.path.join(DATA, name))
        texts += [(name, t["content"]) for c in convs for t in c if t["role"] == "assistant"]
    return [(src, s) for src, t in texts for s in re.split(r"(?<=[。！？\n])", t) if s.strip()]


def section(name):
    text = "".join(read_text_file(f)[0] for f in glob.glob(os.path.join(DATA, "corpus", "kb_*_people.txt")))
    return re.search(r"^【" + name + r"】$(.*?)(?=^【|\Z)", text, flags=re.M | re.S).group(1)


def test_checked_facts_stay_fixed():
    sents = all_texts()
    late = "潇湘子|尼摩星|尹克西|马光佐"
    # only 金轮法王, 霍都 and 达尔巴 came to the 大胜关 英雄大会; the other four join in 忽必烈's camp afterwards
    for src, s in sents:
        if "英雄大会" in s and re.search(late + "|高手", s) and "金轮" in s + src:
            assert re.search("之后|以后|没有|会后", s) or not re.search(late + "|西域|天竺", s), (src, s)
    for name in ("潇湘子", "尼摩星"):
        for s in re.split(r"(?<=。)", section(name)):
            assert "英雄大会" not in s or re.search("之后|以后|没有|会后", s), s
    for src, s in sents:
        # 阿紫's poisoned needle at 萧峰 was on the snowy road north, not at 小镜湖
        assert not ("小镜湖" in s and "阿紫" in s and "针" in s), (src, s)
        # 朱子柳 had the better of 霍都 until the fan's hidden nails; nobody says 霍都 simply won or 朱子柳 simply lost
        assert not re.search(r"霍都[^。；]{0,12}(靠暗器取胜|先胜)|朱子柳[^。；]{0,30}落败|胜霍都", s), (src, s)
        # 杨康 clawed at 黄蓉's shoulder (九阴白骨爪) and pierced his fingers on the 软猬甲; he struck no palm (the palm
        # that put the poison on its spikes was the snake-bitten 南希仁's)
        assert not ("软猬甲" in s and re.search("(杨康|他)[^。；]{0,6}(一掌打在|出掌打|一掌拍在)", s)), (src, s)
        # 逍遥派: 天山童姥 the eldest, 无崖子 the head, 李秋水 the youngest, so 无崖子 is 李秋水's 师兄, not her 师弟
        assert "李秋水的师弟" not in s and not ("李秋水" in s and "师弟无崖子" in s), (src, s)
        # 屠龙刀 went to 郭破虏 and 倚天剑 to 郭襄, never the other way (an earlier 分别 listed them crosswise)
        assert not re.search("屠龙刀[^。；，]{0,8}郭襄|倚天剑[^。；，]{0,8}郭破虏|分别传[^。；]{0,4}郭襄(和|、)郭破虏", s), (src, s)
        # 智光 was a monk of 天台山止观寺, not of 少林寺; 杨过 killed 蒙哥 in his thirties, not in old age
        assert not re.search("少林寺?的智光", s) and not ("蒙哥" in s and "晚年" in s), (src, s)
        # 裘千丈 is the elder twin who passes himself off as 裘千仞; only 郭靖 was born after his father's death; 小龙女,
        # not the boy 杨过, drove off 霍都's suitors; 童姥 saw the portrait and died laughing before 李秋水 did; 陆无双
        # was 李莫愁's pupil; 鸠摩智 held his own against 天龙寺's monks; 段誉 refused 一阳指 only at first
        assert not re.search("(冒充|假冒|假扮)哥哥|郭靖和杨康(都是|是一对结义兄弟的|本是一对结义兄弟的)遗腹子|两个孩子都是遗腹子", s), (src, s)
        assert not (re.search("求亲|求婚|玉蜂面前", s) and re.search("被杨过(击|打)|在杨过和古墓派的玉蜂", s)), (src, s)
        assert not re.search("杨过[^。]{0,6}(击退|打退|击败|打败)了?霍都等人", s), (src, s)
        assert not re.search("童姥先(伤重而死|咽了气|因伤重死去)|陆无双[^。]{0,12}做婢女|占不到上风|始终不肯学一阳指", s), (src, s)
        assert "水上漂" not in s, (src, s)   # 裘千仞's nickname is 铁掌水上飘 in every book
        # 绝情丹: 杨过 kept his half pill for 小龙女 and threw it into the ravine; neither of them ever took one
        if "绝情丹" in s:
            assert not re.search("让给|服下其中|被杨过服下|服过裘千尺|小龙女服|给小龙女吃|吃下了?半枚", s), (src, s)
        if "绝情丹" in s + "丹药" and re.search("抛|扔|掷", s) and "杨过" in s:
            assert "半枚" in s or "半枚" in src, (src, s)
        # 铁木真's golden knife rewarded the one arrow through two eagles; the warning against 桑昆 and 札木合 won
        # 郭靖 the betrothal to 华筝, not the knife
        if "金刀" in s and re.search("报信|救了?(铁木真|他)", s) and re.search("赐|赏", s):
            assert re.search("双雕|射雕|更早|早先|之前", s), (src, s)
        # the families swapped 丘处机's daggers, so the one 郭靖 killed 陈玄风 with was carved 杨康, and 梅超风 long
        # took her husband's killer for someone called 杨康
        if re.search("陈玄风|梅超风", s):
            assert not re.search("刻(着|有)(自己|“郭靖”)|记住了?“?郭靖”?(这个)?(的)?名字", s), (src, s)
