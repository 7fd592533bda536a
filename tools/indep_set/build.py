"""Build the independent dev/test set of printed Chinese lines (``bench/data/indep``).

    apt-get install -y chromium fonts-noto-cjk fonts-wqy-zenhei fonts-wqy-microhei fonts-arphic-ukai \
        fonts-arphic-uming fonts-arphic-gbsn00lp fonts-arphic-gkai00mp fonts-smiley-sans
    python -m tools.indep_set.build [--out bench/data/indep] [--exclude ../shared/eval_exclude.txt]

Independent of the training data by construction:

* Texts: ``tools/indep_set/texts.txt``, written by hand for this set (news-like clauses, everyday
  sentences with their punctuation, signs and labels, dates, times, prices, model numbers, phone
  numbers, Latin words in running text; 2-40 characters). The build refuses a text that a training
  source holds (equal to an HSK sentence, inside one, or holding one of >= 6 characters) or that
  collides with an evaluation list (``--exclude``, and the list in force) in either direction. It
  writes every text to ``ofa_jax/data/indep_texts.txt``, which `ofa_jax.data.holdout` keeps out of
  every random training line; a text containing an HSK sentence or inside one is refused here, so
  the fixed pools hold none either.
* Renderer: headless Chromium (Skia, its own hinting, kerning and text shaping) draws each line from
  HTML with CSS fonts, sizes, weights, letter spacing, colours and backgrounds (flat, gradients,
  stripes, paper tints), mixing Latin-first font stacks as web pages do. Training renders with
  Pillow/FreeType.
* Fonts: the thirteen the training recipe uses are candidates, plus two no training run has used:
  LXGW WenKai and Droid Sans Fallback, fetched with ``apt-get download`` into ``--font-cache`` and
  shown to Chromium alone through a private fontconfig file (so that no training run on this machine
  picks them up). The WenQuanYi pair only renders our synthetic test split, never training.
* Hard subset: each text is drawn a second time in another style and then photographed-looking
  degradations are applied with code of this script only: each of perspective, rotation <= 3 deg,
  low contrast, uneven light, colour cast, defocus or motion blur, resolution loss and sensor noise
  by its own chance (most lines get 3-6 of them, a few none), then JPEG at quality 30-60 always.

Each text goes to dev (``val/``) or ``test/`` by a hash of the text; each split folder has the
images and ``labels.jsonl`` (``file``, ``text``, ``subset`` clean|hard, ``font``, ``px``), readable as
``folder:bench/data/indep``. Choose options on ``val``; report ``test`` once. Rebuilding gives the same
styles and degradations (seeded by the text); pixels can differ with another Chromium or font build.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
TEXTS = Path(__file__).with_name("texts.txt")
PACKAGE_TEXTS = ROOT / "ofa_jax" / "data" / "indep_texts.txt"
PRIVATE_FONT_PACKAGES = ("fonts-lxgw-wenkai", "fonts-droid-fallback")

# CSS family -> a short name for the labels. Unseen: never in a training run's font list.
FAMILIES = {
    "Noto Sans CJK SC": "noto-sans", "Noto Serif CJK SC": "noto-serif", "AR PL UKai CN": "ukai",
    "AR PL UMing CN": "uming", "AR PL SungtiL GB": "gbsn", "AR PL KaitiM GB": "gkai",
    "Smiley Sans": "smiley", "WenQuanYi Zen Hei": "wqy-zenhei", "WenQuanYi Micro Hei": "wqy-microhei",
    "LXGW WenKai": "lxgw-wenkai", "Droid Sans Fallback": "droid",
}
UNSEEN = ("WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "LXGW WenKai", "Droid Sans Fallback")
LATIN_FIRST = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Condensed")


def text_seed(text: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256((salt + "\0" + text).encode("utf-8")).digest()[:8], "big")


def split_of(text: str) -> str:
    return "val" if text_seed(text, "split") % 2 == 0 else "test"


# ------------------------------------------------------------------------------------------ texts

def read_texts(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").split("\n")]
    return list(dict.fromkeys(ln for ln in lines if ln))


def check_texts(texts: list[str], exclude_files: list[Path]) -> list[str]:
    """Reasons to refuse texts ('' list: all fine)."""
    from ofa_jax.data.corpus import available, hsk_sentences
    from ofa_jax.data.holdout import HoldoutFilter
    from ofa_jax.data.text import eval_exclude_path, read_lines
    from ofa_jax.tokenizer import OFATokenizer

    tok = OFATokenizer.default()
    evals = read_lines(eval_exclude_path())
    for f in exclude_files:
        evals += read_lines(f)
    eval_filter = HoldoutFilter(evals)
    corpora = list(hsk_sentences()) if available("hsk") else []
    if not corpora:
        print("warning: hsk-sentences-audio not installed: texts not checked against the HSK pool",
              file=sys.stderr)
    problems = []
    for t in texts:
        if not 2 <= len(t) <= 40:
            problems.append(f"{t}: {len(t)} characters (2-40)")
        if tok.unk_id in tok.encode(t):
            problems.append(f"{t}: a character outside the OFA vocabulary")
        if t in eval_filter:
            problems.append(f"{t}: holds an evaluation line {eval_filter.matches(t)}")
        own = HoldoutFilter([t])
        for line in evals + corpora:
            if line in own or (len("".join(line.split())) >= 6 and "".join(line.split()) in "".join(t.split())):
                problems.append(f"{t}: collides with {line!r}")
                break
    return problems


# ------------------------------------------------------------------------------------------ fonts

def private_fonts(cache: Path) -> Path:
    """Unpack the fonts of PRIVATE_FONT_PACKAGES into ``cache`` (apt-get download + dpkg -x) once."""
    done = cache / ".unpacked"
    if done.is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # apt's download user writes there
        subprocess.run(["apt-get", "download", *PRIVATE_FONT_PACKAGES], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(cache)], check=True)
    done.write_text("\n".join(PRIVATE_FONT_PACKAGES) + "\n")
    return cache


def fontconfig_file(font_dir: Path, tmp: Path) -> Path:
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{html.escape(str(font_dir))}</dir>\n  <cachedir>{html.escape(str(tmp / 'fc'))}</cachedir>\n"
        "</fontconfig>\n")
    return conf


def available_families(env: dict) -> list[str]:
    out = subprocess.run(["fc-list", ":", "family"], env=env, capture_output=True, text=True, check=True).stdout
    names = {n.strip() for line in out.splitlines() for n in line.split(",")}
    return [f for f in FAMILIES if f in names]


# ------------------------------------------------------------------------------------------ styles

def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(max(0, min(255, c))) for c in rgb)


def _lum(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def style_for(text: str, families: list[str], salt: str) -> dict:
    """A CSS look for one line, drawn from a generator seeded by the text."""
    rng = np.random.default_rng(text_seed(text, salt))
    fam = families[int(rng.integers(len(families)))]
    stack = [fam]
    if rng.random() < 0.35:  # Latin and digits from a Latin font first, as many web pages do
        stack.insert(0, LATIN_FIRST[int(rng.integers(len(LATIN_FIRST)))])
    px = int(rng.integers(16, 41))
    weight = 700 if fam.startswith("Noto") and rng.random() < 0.35 else 400
    spacing = float(rng.choice([0, 0, 0, 0.02, 0.05, 0.1, -0.02]))
    r = rng.random()
    if r < 0.45:  # near-white paper
        bg = rng.uniform(235, 255, 3)
        ink = rng.uniform(0, 60, 3) if rng.random() < 0.7 else rng.uniform(0, 1, 3) * np.array([160, 60, 60])
    elif r < 0.75:  # tinted paper or a coloured panel
        bg = rng.uniform(170, 250, 3)
        ink = rng.uniform(0, 80, 3)
    else:  # light text on a dark or saturated panel
        bg = rng.uniform(0, 120, 3)
        ink = rng.uniform(215, 255, 3)
    if abs(_lum(bg) - _lum(ink)) < 110:
        ink = np.zeros(3) if _lum(bg) > 128 else np.full(3, 255.0)
    bgk = rng.random()
    if bgk < 0.55:
        background = _hex(bg)
    elif bgk < 0.8:
        bg2 = np.clip(bg + rng.uniform(-35, 35, 3), 0, 255)
        if abs(_lum(bg2) - _lum(ink)) < 110:
            bg2 = bg
        background = f"linear-gradient({int(rng.integers(0, 360))}deg, {_hex(bg)}, {_hex(bg2)})"
    elif bgk < 0.92:
        bg2 = np.clip(bg + rng.uniform(-18, 18, 3), 0, 255)
        w = int(rng.integers(2, 9))
        background = (f"repeating-linear-gradient({int(rng.choice([0, 45, 90, 135]))}deg, {_hex(bg)} 0 {w}px, "
                      f"{_hex(bg2)} {w}px {2 * w}px)")
    else:
        bg2 = np.clip(bg + rng.uniform(-25, 25, 3), 0, 255)
        background = (f"radial-gradient(circle at {int(rng.integers(0, 100))}% {int(rng.integers(0, 100))}%, "
                      f"{_hex(bg2)}, {_hex(bg)})")
    pad_y, pad_x = int(rng.integers(2, max(3, px // 2))), int(rng.integers(2, max(3, px)))
    return {"family": fam, "stack": stack, "px": px, "weight": weight, "spacing": spacing,
            "ink": _hex(ink), "background": background, "pad": (pad_y, pad_x),
            "italic": bool(salt == "hard" and rng.random() < 0.1),
            "decoration": (str(rng.choice(["underline", "line-through"])) if salt == "hard" and rng.random() < 0.15
                           else "none")}


def line_html(i: int, text: str, st: dict) -> str:
    fams = ", ".join(f"'{f}'" for f in st["stack"])
    css = (f"font-family:{fams};font-size:{st['px']}px;font-weight:{st['weight']};"
           f"letter-spacing:{st['spacing']}em;color:{st['ink']};background:{st['background']};"
           f"padding:{st['pad'][0]}px {st['pad'][1]}px;text-decoration:{st['decoration']};"
           f"font-style:{'italic' if st['italic'] else 'normal'}")
    return f'<div class="row"><span id="l{i}" style="{css}">{html.escape(text)}</span></div>'


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body{{margin:0;background:#808080}} .row{{height:{row}px;white-space:nowrap}}
.row span{{display:inline-block;line-height:1.25;white-space:nowrap}}
</style></head><body>{rows}<script>
document.fonts.ready.then(function(){{var out=[];document.querySelectorAll('.row span').forEach(function(e){{
var r=e.getBoundingClientRect();out.push([r.left,r.top,r.right,r.bottom].join(','));}});
document.body.setAttribute('data-boxes',out.join(';'));}});</script></body></html>"""


def chromium_render(items: list[tuple[str, dict]], tmp: Path, env: dict, browser: str) -> list[Image.Image]:
    """Render (text, style) lines in one page; crop each line's box from a full-page screenshot."""
    row = 130
    page = tmp / "page.html"
    page.write_text(PAGE.format(row=row, rows="\n".join(line_html(i, t, s) for i, (t, s) in enumerate(items))),
                    encoding="utf-8")
    size = f"--window-size=2200,{row * len(items)}"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--force-device-scale-factor=1", "--virtual-time-budget=5000", size]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], env=env, capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r'data-boxes="([^"]*)"', dom)
    if not m:
        raise RuntimeError("chromium: the page did not report its line boxes")
    boxes = [tuple(float(v) for v in b.split(",")) for b in m.group(1).split(";")]
    shot = tmp / "page.png"
    subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], env=env, capture_output=True, check=True)
    full = Image.open(shot).convert("RGB")
    out = []
    for (x0, y0, x1, y1), (text, _) in zip(boxes, items):
        if x1 > full.width:
            raise RuntimeError(f"{text}: wider than the page ({x1:.0f}px)")
        out.append(full.crop((int(np.ceil(x0)), int(np.ceil(y0)), int(np.floor(x1)), int(np.floor(y1)))))
    return out


# ------------------------------------------------------------------------------------------ degradations

def _perspective(img: Image.Image, rng, fill) -> Image.Image:
    w, h = img.size
    m = max(2, int(0.06 * h))
    big = Image.new("RGB", (w + 2 * m, h + 2 * m), fill)
    big.paste(img, (m, m))
    W, H = big.size
    d = rng.uniform(-1, 1, (4, 2)) * np.array([0.03 * W, 0.12 * H])
    dst = np.array([(0, 0), (W, 0), (W, H), (0, H)], float)
    src = dst + d
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    coeffs = np.linalg.solve(np.array(a), np.array(b))
    return big.transform((W, H), Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC, fillcolor=fill)


def degrade(img: Image.Image, text: str) -> tuple[Image.Image, int, list[str]]:
    """Photographed-looking version of a rendered line: (image, JPEG quality, steps applied)."""
    rng = np.random.default_rng(text_seed(text, "degrade"))
    arr = np.asarray(img, np.float32)
    fill = tuple(int(v) for v in np.median(arr.reshape(-1, 3), axis=0))
    steps = []
    if rng.random() < 0.6:
        img = _perspective(img, rng, fill)
        steps.append("perspective")
    if rng.random() < 0.6:
        img = img.rotate(float(rng.uniform(-3, 3)), Image.BICUBIC, expand=True, fillcolor=fill)
        steps.append("rotate")
    arr = np.asarray(img, np.float32)
    h, w = arr.shape[:2]
    if rng.random() < 0.5:  # low contrast: pulled toward the mean
        k = rng.uniform(0.35, 0.7)
        arr = arr.mean((0, 1)) + (arr - arr.mean((0, 1))) * k
        steps.append("contrast")
    if rng.random() < 0.6:  # uneven light: a ramp or a spot
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        d = np.hypot((xx - cx) / w, (yy - cy) / max(h, 1) * 0.3)
        arr = arr * (1 - rng.uniform(0.2, 0.5) * d / d.max())[..., None]
        steps.append("light")
    if rng.random() < 0.4:  # colour cast of the light
        arr = arr * rng.uniform(0.85, 1.1, 3)
        steps.append("cast")
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    r = rng.random()
    if r < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.4))))
        steps.append("defocus")
    elif r < 0.55:
        k = int(rng.choice([3, 5]))  # PIL's kernels are 3x3 or 5x5
        kern = np.zeros((k, k))
        kern[k // 2, :] = 1  # horizontal shake
        img = img.filter(ImageFilter.Kernel((k, k), kern.flatten().tolist(), scale=k))
        steps.append("motion")
    if rng.random() < 0.5:  # resolution loss: a small camera image scaled back up
        f = rng.uniform(0.45, 0.8)
        small = img.resize((max(8, int(img.width * f)), max(8, int(img.height * f))), Image.BILINEAR)
        img = small.resize(img.size, Image.BICUBIC)
        steps.append("resample")
    if rng.random() < 0.7:
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(3, 12), (img.height, img.width, 1))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        steps.append("noise")
    return img, int(rng.integers(30, 61)), steps


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "data" / "indep"))
    ap.add_argument("--texts", default=str(TEXTS))
    ap.add_argument("--exclude", action="append", default=[], help="more evaluation lists to check against")
    ap.add_argument("--font-cache", default=str(Path.home() / ".cache" / "ofa-jax-indep-fonts"))
    ap.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--batch", type=int, default=40)
    args = ap.parse_args(argv)

    texts = read_texts(Path(args.texts))
    problems = check_texts(texts, [Path(p) for p in args.exclude])
    if problems:
        print("refused texts:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        env = dict(os.environ, FONTCONFIG_FILE=str(fontconfig_file(private_fonts(Path(args.font_cache)), tmp)))
        families = available_families(env)
        missing = [f for f in FAMILIES if f not in families]
        if missing:
            print(f"warning: fonts not found, not used: {', '.join(missing)}", file=sys.stderr)
        version = subprocess.run([args.browser, "--version"], capture_output=True, text=True).stdout.strip()
        for split in ("val", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
            (out / split).mkdir(parents=True)
        records = {"val": [], "test": []}
        jobs = [(t, subset) for t in texts for subset in ("clean", "hard")]
        for b in range(0, len(jobs), args.batch):
            chunk = jobs[b:b + args.batch]
            styles = [style_for(t, families, subset) for t, subset in chunk]
            images = chromium_render([(t, s) for (t, _), s in zip(chunk, styles)], tmp, env, args.browser)
            for (text, subset), st, img in zip(chunk, styles, images):
                split = split_of(text)
                stem = f"{text_seed(text, 'id') % 10**10:010d}_{subset}"
                rec = {"text": text, "subset": subset, "font": FAMILIES[st["family"]], "px": st["px"],
                       "latin_first": len(st["stack"]) > 1}
                if subset == "hard":
                    img, q, steps = degrade(img, text)
                    rec.update(file=stem + ".jpg", jpeg_quality=q, degradations=steps,
                               decoration=st["decoration"])
                    img.save(out / split / rec["file"], format="JPEG", quality=q)
                else:
                    rec["file"] = stem + ".png"
                    img.save(out / split / rec["file"], format="PNG", optimize=True)
                records[split].append(rec)
            print(f"{min(b + args.batch, len(jobs))}/{len(jobs)} lines", file=sys.stderr)
    for split, recs in records.items():
        recs.sort(key=lambda r: r["file"])
        with open(out / split / "labels.jsonl", "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps({"file": r.pop("file"), "text": r.pop("text"), **r}, ensure_ascii=False) + "\n")
    PACKAGE_TEXTS.write_text("\n".join(sorted(texts)) + "\n", encoding="utf-8")
    (out / "BUILD.json").write_text(json.dumps({
        "browser": version, "fonts": families, "unseen_fonts": [f for f in UNSEEN if f in families],
        "texts": len(texts), "lines": {s: len(r) for s, r in records.items()}}, indent=1) + "\n")
    print(f"wrote {sum(len(r) for r in records.values())} lines to {out} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
