"""Can a crowd of made-up people teach the model to answer from what it read? (issue 11's extraction probe)

Allen-Zhu & Li (Physics of Language Models, Part 3.1) found that facts about people whose biographies were read in a
single wording become extractable by questions when the pretraining also holds many *other* people, each told in
several wordings and asked about ("celebrities help minorities"). The default corpus has a few hundred people, each
told in about two wordings, and `corpus_only` questions about them stay near 0.17 key-fact accuracy. This writes a
data folder with the whole corpus and re-telling plus --people invented people (names checked absent from the
corpus, the SFT set and the test set), each with seven attributes (外号, 门派, 师父, 兵器, 绝技, 家乡, 父亲) told in
--bios biographies of different wordings and sentence orders, and an sft.jsonl (the Q&A rows pretraining mixes in)
that is the source's plus questions about those people (--only_synthetic: the invented people and their questions
alone, Part 3.1's own setting at this model's size). --held_out of them get no questions: their questions go to
`test_synthetic.jsonl` (with keys, for `eval_rouge.py --test`), to tell whether the skill generalised at all.

    python bench/synthetic_people.py data/jinyong data/jinyong_sy --people 400 --bios 3
    python prepare.py --dataset jinyong_sy --input data/jinyong_sy --val_input data/jinyong/val \
        --tokenizer data/jinyong/tokenizer.json && python prepare_sft.py --dataset jinyong_sy --extra
    bash bench/quality.sh sy 1337 -- --dataset=jinyong_sy --max_iters=730 -- --dataset=jinyong

Everything written is invented by this script from the word lists below; no line of the novels is used.
"""
import argparse
import json
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import DataError, list_text_files, read_text_file  # noqa: E402
from errors import run_main  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402

SURNAMES = "赵钱孙李吴郑王冯褚卫蒋沈韩朱秦许何吕施张孔曹严华魏陶姜谢邹柏窦章云苏潘葛范彭鲁韦马苗方俞任袁柳鲍唐费" \
           "岑薛雷贺倪汤滕罗毕安常乐时傅齐康伍余顾孟邵汪毛狄贝臧计成戴宋庞熊纪舒屈祝董杜蓝闵季贾江童颜盛钟徐骆蔡田" \
           "樊胡凌万管卢房缪解宗丁宣邓郁杭诸左崔吉龚程邢裴荣翁惠甄芮储靳焦弓牧车侯全班秋仲伊宁仇甘厉戎符景詹束叶"
GIVEN = "德清远明英云天虎雪霜华松竹兰春山海河志豪杰仁礼信忠孝安平宁长文贤良承宗辉振兴鹏鸿青刚勇毅恒敬怀思若" \
        "之子元成正直守进益嘉和敏静慧秀芳丽琴书剑川岳泰宏广洪涛润泉林森柯桐枫舟帆尘星辰晨曦阳朗乾坤"
NICK_HEADS = ["铁臂", "追风", "翻江", "摘星", "飞天", "千手", "八臂", "双刀", "闪电", "笑面", "冷面", "金眼", "白发",
              "青衫", "醉眼", "神拳", "独脚", "快刀", "银枪", "赤发", "黑面", "过山", "出洞", "穿云", "踏雪", "分水"]
NICK_TAILS = ["神猿", "书生", "罗刹", "蛟龙", "苍鹰", "猛虎", "灵狐", "仙子", "剑客", "判官", "太岁", "夜叉", "居士",
              "狂生", "老人", "飞燕", "金刚", "行者", "钓叟", "山君", "玉郎", "花婆"]
SECT_PLACES = ["青竹", "落霞", "寒江", "铁岭", "紫阳", "苍梧", "赤霞", "碧水", "黑石", "金沙", "玄冰", "云梦", "雁荡",
               "栖霞", "天目", "九嶷", "罗浮", "太白"]
SECT_KINDS = ["派", "门", "帮", "庄", "堂"]
WEAPONS = ["长剑", "单刀", "铁笛", "判官笔", "钢鞭", "短戟", "铁扇", "流星锤", "峨嵋刺", "软鞭", "铜锤", "长枪", "铁棍",
           "双钩", "九节鞭", "飞刀", "铁琵琶", "拂尘", "铁伞", "月牙铲", "金环", "铁算盘", "钓竿", "链子枪", "铁牌"]
SKILL_HEADS = ["寒冰", "烈焰", "回风", "穿心", "六合", "七星", "九宫", "无影", "追魂", "分筋", "缠丝", "飘雪", "断水",
               "惊雷", "碎石", "流云", "开山", "落叶", "游龙", "伏虎"]
SKILL_KINDS = ["掌", "剑法", "刀法", "拳", "指", "腿", "鞭法", "枪法", "爪"]
PLACES = ["泉州", "福州", "广州", "桂林", "长沙", "武昌", "南昌", "徽州", "绍兴", "宁波", "大同", "兰州", "凉州", "沧州",
          "登州", "潭州", "建康", "苏州", "扬州", "洛阳", "太原", "济南", "成都", "开封", "衡州", "温州"]
ATTRIBUTES = ["nick", "sect", "master", "weapon", "skill", "home", "father"]

# sentence wordings of each attribute in a biography; {n} the person, {v} the value, {c} 儿子/女儿
TOLD = {
    "nick": ["{n}人称“{v}”。", "江湖上都叫{n}“{v}”。", "{n}的外号是“{v}”。", "“{v}”是{n}在江湖上的名号。"],
    "sect": ["{n}是{v}的弟子。", "{n}出身{v}。", "{n}拜入{v}门下，是{v}的人。", "{v}中有一位好手，名叫{n}。"],
    "master": ["{n}的师父是{v}。", "{n}自幼跟随{v}学艺。", "{v}收了{n}做徒弟。", "{n}的武功是{v}亲手传授的。"],
    "weapon": ["{n}使一柄{v}。", "{n}惯用的兵器是{v}。", "{n}与人动手时总是拿着{v}。", "{v}是{n}随身的兵器。"],
    "skill": ["{n}最拿手的武功是{v}。", "{n}擅长{v}。", "{n}凭一路{v}成名。", "说到{n}的绝技，便是{v}。"],
    "home": ["{n}是{v}人。", "{n}生在{v}。", "{n}的家乡在{v}。", "{n}从小在{v}长大。"],
    "father": ["{n}的父亲是{v}。", "{n}是{v}的{c}。", "{v}是{n}的父亲。", "{n}的爹爹名叫{v}。"],
}
ASKED = {
    "nick": ["{n}的外号是什么？", "江湖上怎么称呼{n}？", "{n}人称什么？"],
    "sect": ["{n}是哪个门派的？", "{n}出身什么门派？", "{n}是哪一派的弟子？"],
    "master": ["{n}的师父是谁？", "{n}跟谁学的武功？", "{n}拜谁为师？"],
    "weapon": ["{n}用什么兵器？", "{n}使的是什么兵器？", "{n}的兵器是什么？"],
    "skill": ["{n}擅长什么武功？", "{n}的绝技是什么？", "{n}最拿手的功夫是什么？"],
    "home": ["{n}是哪里人？", "{n}的家乡在哪里？", "{n}生在什么地方？"],
    "father": ["{n}的父亲是谁？", "{n}的爹是谁？", "{n}是谁的{c}？"],
}
ANSWERED = {
    "nick": "{n}的外号是“{v}”。", "sect": "{n}是{v}的弟子。", "master": "{n}的师父是{v}。",
    "weapon": "{n}使的兵器是{v}。", "skill": "{n}最拿手的武功是{v}。", "home": "{n}是{v}人。",
    "father": "{n}的父亲是{v}。",
}
INTRO_Q = ["{n}是谁？", "{n}是什么人？", "介绍一下{n}。"]
INTRO_A = "{n}是{sect}的弟子，人称“{nick}”，师父是{master}，擅长{skill}。"


def invent_people(count, seed, forbidden):
    """count people with seven attributes each; a name (and its surname with first given character) never occurs in
    forbidden, so no invented name contains a real one (郭靖远 would)."""
    rng = random.Random(seed)
    used, people = set(), []

    def new_name(surname=None):
        while True:
            name = (surname or rng.choice(SURNAMES)) + "".join(rng.sample(GIVEN, 2))
            if name not in used and name not in forbidden and name[:2] not in forbidden:
                used.add(name)
                return name

    def new_value(make):
        while True:
            value = make()
            if value not in forbidden:
                return value

    sects = sorted({new_value(lambda: rng.choice(SECT_PLACES) + rng.choice(SECT_KINDS)) for _ in range(40)})
    for _ in range(count):
        name = new_name()
        people.append({
            "name": name, "female": rng.random() < 0.3,
            "nick": new_value(lambda: rng.choice(NICK_HEADS) + rng.choice(NICK_TAILS)),
            "sect": rng.choice(sects), "master": new_name(), "weapon": rng.choice(WEAPONS),
            "skill": new_value(lambda: rng.choice(SKILL_HEADS) + rng.choice(SKILL_KINDS)),
            "home": rng.choice(PLACES), "father": new_name(name[0]),
        })
    return people


def fill(template, person, attribute=None):
    return template.format(n=person["name"], v=person.get(attribute, ""), c="女儿" if person["female"] else "儿子",
                           **{k: person[k] for k in ATTRIBUTES})


def biography(person, rng):
    """One telling: every attribute once, in a random wording and order, under the person's 【header】."""
    order = ATTRIBUTES[:]
    rng.shuffle(order)
    return f"【{person['name']}】\n\n" + "".join(fill(rng.choice(TOLD[a]), person, a) for a in order) + "\n"


def questions(person, rng):
    """(question, answer, keys) for every attribute and an introduction."""
    rows = [(fill(rng.choice(ASKED[a]), person, a), fill(ANSWERED[a], person, a), [person[a]]) for a in ATTRIBUTES]
    rows.append((fill(rng.choice(INTRO_Q), person), fill(INTRO_A, person), [person["sect"], person["nick"]]))
    return rows


def write(args):
    side = [os.path.join(args.src, n) for n in ("sft.jsonl", "sft_wordings.jsonl", "test.jsonl")]
    for path in side + [os.path.join(args.src, "tokenizer.json")]:
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file (synthetic_people.py needs it in the source folder)")
    if os.path.isdir(args.dst) and os.listdir(args.dst):
        raise DataError(f"{args.dst}: exists and is not empty; synthetic_people.py writes a new folder (remove it first)")
    sources = list_text_files([os.path.join(args.src, "corpus"), os.path.join(args.src, "rewrites")])
    forbidden = "\n".join([read_text_file(p)[0] for p in sources] + [open(p, encoding="utf-8").read() for p in side])
    people = invent_people(args.people, args.seed, forbidden)
    rng = random.Random(args.seed + 1)
    held_out = {p["name"] for p in rng.sample(people, round(args.held_out * len(people)))}
    with atomic_output_dir(args.dst) as tmp:
        for path in [] if args.only_synthetic else sources:
            shutil.copy(path, tmp)           # flat, as atomic_output_dir wants: the names do not collide
        chars = 0
        for k in range(args.bios):           # one file per telling, people shuffled, so tellings are far apart
            order = people[:]
            rng.shuffle(order)
            told = "\n".join(biography(p, rng) for p in order)
            chars += len(told)
            with open(os.path.join(tmp, f"synthetic_people_{k + 1}.txt"), "w", encoding="utf-8") as f:
                f.write(told)
        shutil.copy(os.path.join(args.src, "tokenizer.json"), tmp)
        shutil.copy(os.path.join(args.src, "test.jsonl"), tmp)
        with open(os.path.join(args.src, "sft.jsonl"), encoding="utf-8") as f:
            source = f.read()
        asked = held = 0
        with open(os.path.join(tmp, "sft.jsonl"), "w", encoding="utf-8") as out, \
                open(os.path.join(tmp, "test_synthetic.jsonl"), "w", encoding="utf-8") as test:
            if not args.only_synthetic:
                out.write(source if source.endswith("\n") else source + "\n")
            for p in people:
                for q, a, keys in questions(p, rng):
                    if p["name"] in held_out:
                        test.write(json.dumps({"question": q, "answer": a, "group": "synthetic_held_out",
                                               "keys": keys}, ensure_ascii=False) + "\n")
                        held += 1
                    else:
                        out.write(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n")
                        asked += 1
        with open(os.path.join(tmp, "people.json"), "w", encoding="utf-8") as f:
            json.dump(people, f, ensure_ascii=False, indent=1)
    print(f"{args.dst}: {len(people)} invented people, {args.bios} tellings each ({chars:,} characters), "
          f"{asked} Q&A rows in sft.jsonl, {held} held-out questions in test_synthetic.jsonl")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="data folder with corpus/, rewrites/, sft.jsonl, sft_wordings.jsonl, test.jsonl "
                                "and tokenizer.json")
    ap.add_argument("dst", help="data folder to write")
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--bios", type=int, default=3, help="tellings of each person")
    ap.add_argument("--held_out", type=float, default=0.2, help="share of people asked nothing in sft.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only_synthetic", action="store_true",
                    help="leave out the corpus, the re-telling and the source's Q&A rows: Part 3.1's setting alone")
    args = ap.parse_args()
    if args.people < 1 or args.bios < 1 or not 0 <= args.held_out < 1:
        raise DataError("--people and --bios must be at least 1 and --held_out in [0, 1)")
    write(args)


if __name__ == "__main__":
    run_main(main)
