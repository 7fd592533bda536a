"""Small generated data for the data tests: encoded images, label folders, OFA-Sys TSVs."""

import base64
import io
import json

import numpy as np
from PIL import Image

# One line from the packaged held-out evaluation list: training splits must drop it.
EXCLUDED_LINE = "银行给了他一笔贷款。"


def encoded_image(seed: int, fmt: str = "PNG", size=(40, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def sample_records(n: int, *, with_excluded: bool = False, offset: int = 0):
    """[(image bytes, label)] with mixed PNG/JPEG, CJK, full-width, spaces, and U+2028 in a label."""
    labels = ["你好世界", "ＡＢＣ１２３", "Hello World", "繁體中文", "a\u2028b", "价格：17元", "  空格  "]
    recs = []
    for i in range(n):
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        recs.append((encoded_image(offset + i, fmt, size=(30 + i, 12 + i % 5)),
                     f"{labels[i % len(labels)]}{i}"))
    if with_excluded:
        recs.insert(1, (encoded_image(999), EXCLUDED_LINE))
    return recs



def write_label_folder(folder, recs, fmt="jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, text) in enumerate(recs):
        name = f"img_{i:03d}.bin"  # the extension does not matter: bytes are stored as they are
        (folder / name).write_bytes(img)
        lines.append(json.dumps({"file": name, "text": text}, ensure_ascii=False) if fmt == "jsonl"
                     else f"{name}\t{text}")
    (folder / f"labels.{fmt}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ofasys_tsv(path, recs):
    lines = [f"uid{i}\t{base64.b64encode(img).decode()}\t{text}" for i, (img, text) in enumerate(recs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class CharTokenizer:
    """Deterministic stand-in: one id per character (the real tokenizer is tested elsewhere); importable,
    so worker processes can unpickle it."""

    def encode(self, text):
        return [4 + (ord(c) % 1000) for c in text if not c.isspace()]


class FailingAt:
    """Random access to ``dataset`` that raises at index ``bad`` (a bug, not a bad record)."""

    def __init__(self, dataset, bad):
        self.dataset, self.bad = dataset, bad

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, j):
        if j == self.bad:
            raise RuntimeError(f"boom at line {j}")
        return self.dataset[j]


def take(it, k):
    return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
