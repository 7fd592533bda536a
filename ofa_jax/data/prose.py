"""The ``prose`` text source: lines that look like printed running text.

A line is cut from a generated paragraph the way a line of a page or a web column is: it may start and
end mid-sentence, carries the punctuation the sentence has (commas, enumeration commas, colons,
brackets, book-title marks, sentence ends, also at the line's end), and never starts with closing
punctuation (a typesetter pulls that onto the line before). Sentences are clauses from templates whose
slots are jieba dictionary words of the right part of speech (drawn by the square root of their
frequency: common words often, rare ones still seen) and the things real text is full of: dates,
clock times, prices, percentages, counts with measure words, model numbers and codes, phone numbers
and Latin words (brands, abbreviations, English words) inside the Chinese.

Lengths are uniform over ``[min_len, max_len]`` (a window of that many characters; one more or
less where a cut would split off punctuation). A few shapes bypass the paragraph: headline-like
clauses without a final mark, and stand-alone dates, prices, codes, phone numbers.

Every line passes `ofa_jax.data.holdout` (the evaluation lines and the independent set's texts are
redrawn). Needs jieba's dictionary (``pip install jieba``, or ``$OFA_JAX_WORDS_DICT``) like ``words``.
"""

from __future__ import annotations

import functools
import lzma

import numpy as np

# Punctuation a line never starts with (it would be pulled onto the line before).
NO_LINE_START = "，。、；：？！）》」』】%"
SENTENCE_END = "。！？"
CLAUSE_PUNCT = "，。、；：？！（）《》「」"

_PRONOUNS = ("我们", "他们", "她们", "我", "他", "她", "大家", "记者", "专家", "该公司", "有关部门",
             "市民", "消费者", "网友", "学生们", "厂家", "用户", "游客", "居民", "工作人员", "本报记者",
             "这家企业")
_LATIN_WORDS = (
    "USB", "USB-C", "Wi-Fi", "WiFi", "App", "APP", "CEO", "GDP", "CPI", "AI", "IT", "PM2.5", "NBA", "WTO",
    "VIP", "PDF", "DNA", "LED", "GPS", "5G", "4K", "3D", "SUV", "MBA", "KTV", "PPT", "Excel", "Word",
    "Android", "Windows", "Linux", "Python", "Java", "Office", "logo", "email", "online", "OK", "ID",
    "smart", "home", "cloud", "data", "open", "design", "studio", "coffee", "mini", "pro", "max", "plus",
    "lite", "air", "book", "phone", "cafe", "hotel", "group", "tech", "city", "world", "news", "China",
    "Beijing", "Shanghai", "Hello", "Happy", "style", "shop", "mall", "park", "club", "team", "line",
    "HDMI", "SIM", "NFC", "CPU", "GPU", "SSD", "RAM", "QQ", "ETC", "ICU", "CT", "B2B", "O2O", "UI", "HR")
_MEASURE = ("个", "位", "名", "家", "件", "台", "辆", "条", "项", "次", "种", "本", "张", "所", "座",
            "批", "吨", "公斤", "公里", "米", "亩", "户", "元", "天", "年", "小时", "分钟", "倍", "套",
            "场")
_BIG_UNITS = ("", "", "", "万", "亿", "千")
_CURRENCY_WORDS = ("元", "万元", "亿元", "美元", "元/斤", "元/平方米", "元起")
_CLAUSE_JOIN = "，" * 17 + "；" * 2 + "："
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Clause templates. {S} subject, {O} object, {N} noun, {V} verb, {A} adjective, {D} adverb, {NS} place,
# {NR} person, {NT} organisation, {VN} verbal noun, {T} time word, {I} idiom; number shapes: {NUM}
# {INT} {NUMQ} (count + measure word), {PCT}, {DATE}, {CLOCK}, {PRICE}, {CODE}, {PHONE}, {LAT} (Latin word).
_TEMPLATES = (
    "{S}{D}{V}{O}", "{S}{V}{O}", "{T}{S}{V}{O}", "{S}在{NS}{V}{O}", "{DATE}{NT}{V}{O}",
    "{S}{V}了{NUMQ}{N}", "{N}的价格为{PRICE}", "{S}于{DATE}{CLOCK}{V}{O}", "本次{VN}共有{INT}人参加",
    "{NS}{N}同比增长{PCT}", "{CODE}型{N}", "新款{CODE}售价{PRICE}", "{S}使用{LAT}{V}{N}",
    "请于{CLOCK}前{V}{N}", "联系电话：{PHONE}", "《{N}{N}》", "{N}、{N}和{N}", "{NR}表示{S}{V}{O}",
    "{I}", "{A}的{N}", "{S}{D}{A}", "第{INT}届{N}{VN}", "{NUMQ}{N}", "（{N}）", "{S}认为{O}{D}{A}",
    "{LAT}{N}", "{N}{LAT}", "{NS}{NT}", "{S}对{N}进行{VN}", "{T}{CLOCK}{V}{O}", "{N}降至{PCT}",
    "{NR}在{NS}{V}", "从{DATE}起{V}{N}", "{S}将{V}{NUMQ}{N}", "{N}达到{INT}{BIG}{MEAS}",
    "{CODE}次列车{CLOCK}{V}", "{S}把{N}{V}", "{N}共计{PRICE}", "{S}{V}的{N}", "{D}{V}{O}",
    "{S}购买了{CODE}", "{S}是{A}的{N}", "{NT}发布{N}{VN}报告", "{I}的{N}", "{LAT}{VN}{N}",
)
_TAGS = {"n": "n", "v": "v", "a": "a", "d": "d", "ns": "ns", "nr": "nr", "nt": "nt", "vn": "vn",
         "t": "t", "i": "i", "l": "l", "ad": "ad"}


@functools.lru_cache(maxsize=1)
def _pools() -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """{tag: (words, cumulative sqrt-frequency)} from jieba's dictionary, GB2312 hanzi words only."""
    from ofa_jax.data.corpus import gb2312_hanzi, words_dict_path

    path = words_dict_path()
    if path is None or not path.is_file():
        raise ImportError("text source 'prose' needs the PyPI package jieba (pip install jieba) "
                          "or OFA_JAX_WORDS_DICT naming a word-frequency file")
    raw = path.read_bytes()
    text = (lzma.decompress(raw) if path.suffix == ".xz" else raw).decode("utf-8")
    hanzi = set("".join(gb2312_hanzi()))
    words: dict[str, list[str]] = {t: [] for t in _TAGS.values()}
    weights: dict[str, list[float]] = {t: [] for t in _TAGS.values()}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 3 or parts[2] not in words or not parts[1].isdigit():
            continue
        w = parts[0]
        if not 1 <= len(w) <= (8 if parts[2] in ("nt", "i", "l") else 4) or not all(c in hanzi for c in w):
            continue
        words[parts[2]].append(w)
        weights[parts[2]].append(float(int(parts[1]) + 1) ** 0.5)
    out = {}
    for t in words:
        if not words[t]:  # a user word list without tags: every slot draws from all words
            raise ValueError(f"text source 'prose': {path} has no words tagged {t!r} "
                             "(it needs jieba's 'word count tag' lines)")
        out[t] = (tuple(words[t]), np.cumsum(np.asarray(weights[t])))
    return out


class _Gen:
    """One paragraph's worth of draws from ``rng``."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.pools = rng, _pools()

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def word(self, tag: str) -> str:
        words, cum = self.pools[tag]
        return words[int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))]

    def num(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return str(int(self.rng.integers(1, 100)))
        if r < 0.8:
            return str(int(self.rng.integers(100, 10000)))
        return f"{self.rng.uniform(0.1, 99.9):.1f}"

    def pct(self) -> str:
        return f"{self.rng.uniform(0.1, 60):.{int(self.rng.integers(0, 3))}f}%"

    def date(self) -> str:
        y, m, d = int(self.rng.integers(1949, 2036)), int(self.rng.integers(1, 13)), int(self.rng.integers(1, 29))
        r = self.rng.random()
        if r < 0.45:
            return f"{y}年{m}月{d}日"
        if r < 0.65:
            return f"{m}月{d}日"
        if r < 0.8:
            return f"{y}年{m}月"
        if r < 0.9:
            return f"{y}-{m:02d}-{d:02d}"
        return f"{y}/{m}/{d}" if self.rng.random() < 0.5 else f"{y}.{m:02d}.{d:02d}"

    def clock(self) -> str:
        h, mi = int(self.rng.integers(0, 24)), int(self.rng.integers(0, 60))
        r = self.rng.random()
        if r < 0.5:
            return f"{h}:{mi:02d}"
        if r < 0.65:
            return f"{h:02d}:{mi:02d}-{min(h + int(self.rng.integers(1, 9)), 23):02d}:{mi:02d}"
        if r < 0.85:
            return f"{self.pick(('上午', '下午', '晚上', '凌晨'))}{h % 12 + 1}点{mi}分"
        return f"{h}时{mi}分"

    def price(self) -> str:
        r = self.rng.random()
        v = self.rng.uniform(0.5, 9999)
        if r < 0.3:
            return f"¥{v:.2f}"
        if r < 0.4:
            return f"${v:.2f}"
        if r < 0.8:
            return f"{int(v)}{self.pick(_CURRENCY_WORDS)}"
        return f"{v:.1f}{self.pick(_CURRENCY_WORDS)}"

    def code(self) -> str:
        r = self.rng.random()
        letters = "".join(self.pick(_LETTERS) for _ in range(int(self.rng.integers(1, 4))))
        digits = str(int(self.rng.integers(1, 10 ** int(self.rng.integers(1, 5)))))
        if r < 0.35:
            return letters + digits
        if r < 0.6:
            return f"{letters}-{digits}"
        if r < 0.75:
            return f"{letters}{digits}{self.pick(_LETTERS)}"
        if r < 0.85:
            return f"{self.pick(_LATIN_WORDS)} {digits}"
        return f"{letters}{digits}-{int(self.rng.integers(10, 999))}"

    def phone(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"0{int(self.rng.integers(10, 999))}-{int(self.rng.integers(2000000, 99999999))}"
        if r < 0.7:
            return f"1{int(self.rng.integers(3, 10))}{int(self.rng.integers(0, 10 ** 9)):09d}"
        return f"400-{int(self.rng.integers(100, 999))}-{int(self.rng.integers(1000, 9999))}"

    def latin(self) -> str:
        if self.rng.random() < 0.75:
            return self.pick(_LATIN_WORDS)
        n = int(self.rng.integers(2, 8))
        w = "".join(self.pick(_LETTERS) for _ in range(n)).lower()
        return w.capitalize() if self.rng.random() < 0.5 else w

    def subject(self) -> str:
        r = self.rng.random()
        if r < 0.25:
            return self.pick(_PRONOUNS)
        if r < 0.45:
            return self.word("nr")
        if r < 0.6:
            return self.word("nt")
        if r < 0.75:
            return self.word("ns") + self.word("n")
        return self.word("n")

    def obj(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.word("n")
        if r < 0.6:
            return self.word("a") + "的" + self.word("n")
        if r < 0.72:
            return self.numq() + self.word("n")
        if r < 0.85:
            return self.word("vn")
        return self.word("n") + self.word("n")

    def numq(self) -> str:
        if self.rng.random() < 0.7:
            return str(int(self.rng.integers(1, 1000))) + self.pick(_MEASURE)
        return self.word("l")

    def fill(self, slot: str) -> str:
        f = {"S": self.subject, "O": self.obj, "N": lambda: self.word("n"), "V": lambda: self.word("v"),
             "A": lambda: self.word("a"), "D": lambda: self.word("d") if self.rng.random() < 0.8 else self.word("ad"),
             "NS": lambda: self.word("ns"), "NR": lambda: self.word("nr"), "NT": lambda: self.word("nt"),
             "VN": lambda: self.word("vn"), "T": lambda: self.word("t"), "I": lambda: self.word("i"),
             "NUM": self.num, "INT": lambda: str(int(self.rng.integers(1, 2000))), "NUMQ": self.numq,
             "PCT": self.pct, "DATE": self.date, "CLOCK": self.clock,
             "PRICE": self.price, "CODE": self.code, "PHONE": self.phone, "LAT": self.latin,
             "BIG": lambda: self.pick(_BIG_UNITS), "MEAS": lambda: self.pick(_MEASURE)}[slot]
        return f()

    def clause(self) -> str:
        t = self.pick(_TEMPLATES)
        out, i = [], 0
        while i < len(t):
            if t[i] == "{":
                j = t.index("}", i)
                out.append(self.fill(t[i + 1:j]))
                i = j + 1
            else:
                out.append(t[i])
                i += 1
        return "".join(out)

    def sentence(self) -> str:
        n = 1 + int(self.rng.choice(4, p=(0.3, 0.35, 0.25, 0.1)))
        parts = [self.clause()]
        for _ in range(n - 1):
            parts.append(self.pick(_CLAUSE_JOIN))
            parts.append(self.clause())
        end = self.rng.random()
        return "".join(parts) + ("。" if end < 0.82 else "！" if end < 0.88 else "？" if end < 0.95 else "；")

    def standalone(self) -> str:
        """What a short line often is on its own: a heading, a date, a price, a code, a phone number."""
        r = self.rng.random()
        if r < 0.4:
            return self.clause()
        return self.fill(self.pick(("DATE", "CLOCK", "PRICE", "CODE", "PHONE", "PCT", "NUMQ", "LAT")))


def _window(text: str, sentence_ends: list[int], n: int, rng: np.random.Generator) -> str:
    """``n`` characters of ``text``: ending at a sentence end, starting at a sentence start, or
    anywhere; no closing punctuation at the start, none split off at the end."""
    r = rng.random()
    ends = [e for e in sentence_ends if e >= n]
    starts = [0] + [e for e in sentence_ends if e + n <= len(text)]
    if r < 0.4 and ends:
        e = ends[int(rng.integers(len(ends)))]
        s = e - n
    elif r < 0.6 and starts:
        s = starts[int(rng.integers(len(starts)))]
    else:
        s = int(rng.integers(0, len(text) - n + 1))
    line = text[s:s + n]
    if s + n < len(text) and text[s + n] in NO_LINE_START:
        line += text[s + n]  # the mark after the cut stays on this line
    while line and line[0] in NO_LINE_START:
        line = line[1:]
    return line.strip()


def random_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    """One line of ``prose`` (see the module docstring), between ``min_len`` and ``max_len`` + 1
    characters, not held out (`ofa_jax.data.holdout.load_holdout`)."""
    from ofa_jax.data.holdout import load_holdout

    holdout = load_holdout()
    for _ in range(100):
        g = _Gen(rng)
        n = int(rng.integers(min_len, max_len + 1))
        if n <= 14 and rng.random() < 0.35:
            line = g.standalone()
            if len(line) > n:
                line = line[:n]
        else:
            text, ends = "", []
            while len(text) < n + 12:
                text += g.sentence()
                ends.append(len(text))
            line = _window(text, ends, n, rng)
        line = line.strip()
        if len(line) >= max(1, min_len - 1) and line not in holdout:
            return line
    raise RuntimeError("text source 'prose': 100 draws in a row were held out or empty")
