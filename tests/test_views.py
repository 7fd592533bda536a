"""Test-time views (ofa_jax/views.py) and the view ensemble in the Recognizer, on the reference-checked micro model."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from ofa_jax.decode import main as decode_main
from ofa_jax.modeldir import save_model_dir
from ofa_jax.recognizer import Recognizer
from ofa_jax.views import parse_views, view_fn
from tools.convert_weights import state_dict_to_variables
from tools.convert_weights.convert import BUNDLED_VOCAB

from reference_weights import FIXTURES, decode_case

VIEWS = ("id", "w1.3", "blur1.0")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    sd, data, meta, cfg = decode_case()
    variables, extras = state_dict_to_variables(sd, cfg)
    d = tmp_path_factory.mktemp("model")
    save_model_dir(str(d), cfg, variables, BUNDLED_VOCAB, generation={**meta["settings"]["beam5"], "beam_size": 1},
                   extras=extras)
    images = [os.path.join(FIXTURES, "decode_images", n) for n in meta["images"]]
    return str(d), images


def test_view_names_parse_and_transform():
    assert parse_views(None) == ("id",)
    assert parse_views("id, w1.15,pad0.1,blur.8") == ("id", "w1.15", "pad0.1", "blur.8")
    im = Image.new("RGB", (40, 10), (255, 255, 255))
    im.putpixel((5, 5), (0, 0, 0))
    assert view_fn("id")(im) is im
    assert view_fn("w1.15")(im).size == (46, 10)
    padded = view_fn("pad0.2")(im)
    assert padded.size == (44, 14) and padded.getpixel((0, 0)) == (255, 255, 255) and padded.getpixel((7, 7)) == (0, 0, 0)
    assert view_fn("blur1")(im).getpixel((5, 5))[0] > 0  # the dark pixel spread out
    for bad in ("w", "id2", "x1.1", "w0", "w9", "blur-1", "", "id,,w1.1", "id,id"):
        with pytest.raises(ValueError):
            parse_views(bad)


def _joint_greedy(rec, views, images, max_len):
    """The view ensemble written out without the decode cache: at each step the whole prefix is run
    teacher-forced under every view and the views' log-probabilities are averaged.

    Jitted with the Recognizer's compiler options, and each step's result fetched. Run eagerly it was
    845 one-op programs on arrays sharded over the 8 fake devices, hundreds of them in flight at once:
    past 32 behind a slow one, jaxlib's CPU client deadlocks and XLA aborts the process (the suite's
    SIGABRT under load; docs/faults.md, tests/test_cpu_collectives.py)."""
    import jax
    import jax.numpy as jnp

    from ofa_jax.xla_options import compiler_options

    model, out = rec.model, []
    encode = jax.jit(lambda v, p, s: model.apply(v, p, s, method=model.encode), compiler_options=compiler_options())
    log_probs = jax.jit(lambda v, prev, enc: jax.nn.log_softmax(
        model.apply(v, prev, enc, method=model.decode)[:, -1].astype(jnp.float32), -1), compiler_options=compiler_options())
    for path in images:
        im = Image.open(path).convert("RGB")
        pixels, src = rec._batch(np.stack([rec.preprocess(view_fn(v)(im)) for v in views]))
        n = len(views)
        enc = encode(rec.variables, pixels[:n], src[:n])
        toks, total = [rec.tokenizer.bos_id], 0.0
        for step in range(max_len + 1):
            prev = jnp.asarray([toks] * n, jnp.int32)
            lp = np.asarray(log_probs(rec.variables, prev, enc)).mean(0)
            lp[rec.tokenizer.pad_id] = -np.inf
            if step < rec.gen.min_len:
                lp[rec.tokenizer.eos_id] = -np.inf
            if step == max_len:
                lp[np.arange(len(lp)) != rec.tokenizer.eos_id] = -np.inf
            t = int(np.argmax(lp))
            toks.append(t)
            total += float(lp[t])
            if t == rec.tokenizer.eos_id:
                break
        out.append((rec.tokenizer.decode_ocr(toks[1:]), total / (len(toks) - 1)))
    return out


def test_view_ensemble_is_one_search_over_the_mean_log_probabilities(model_dir):
    d, images = model_dir
    plain = Recognizer.from_pretrained(d, batch_size=4, max_len=6)
    assert plain.views == ("id",)
    same = Recognizer.from_pretrained(d, batch_size=4, max_len=6, views="id")(images)
    assert [(x.text, x.score) for x in same] == [(x.text, x.score) for x in plain(images)]

    rec = Recognizer.from_pretrained(d, batch_size=4, max_len=6, views=VIEWS)
    got = rec(images[:4])
    want = _joint_greedy(rec, VIEWS, images[:4], max_len=6)
    assert [g.text for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g.score for g in got], [w[1] for w in want], atol=1e-5)
    # the ensemble is not one of its views: its readings differ from the plain ones somewhere
    assert [g.text for g in got] != [x.text for x in plain(images[:4])]


def test_views_default_from_the_model_dir_and_bad_input(model_dir, tmp_path, capsys):
    d, images = model_dir
    with open(os.path.join(d, "generation.json")) as f:
        gen = json.load(f)
    d2 = tmp_path / "with_views"
    import shutil
    shutil.copytree(d, d2)
    (d2 / "generation.json").write_text(json.dumps({**gen, "views": list(VIEWS)}))
    assert Recognizer.from_pretrained(str(d2)).views == VIEWS
    assert Recognizer.from_pretrained(str(d2), views="id").views == ("id",)

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc = decode_main(["--model", str(d2), "--json", images[0], str(bad), images[1]])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.strip().splitlines()]
    expected = Recognizer.from_pretrained(str(d2))([images[0], images[1]])
    assert rc == 1 and [r.get("text") for r in rows] == [expected[0].text, None, expected[1].text]
    assert len([l for l in err.splitlines() if l.startswith("error: ")]) == 1

    rc = decode_main(["--model", d, "--views", "id,w", images[0]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: unknown view 'w'") and "\n" not in err


def test_sharded_view_ensemble_equals_single_device(model_dir):
    import jax
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    d, images = model_dir
    one = Recognizer.from_pretrained(d, batch_size=8, max_len=6, views=VIEWS, devices=jax.devices()[:1])
    eight = Recognizer.from_pretrained(d, batch_size=8, max_len=6, views=VIEWS, devices=jax.devices()[:8])
    inputs = images * 3  # one full and one partial batch
    a, b = one(inputs), eight(inputs)
    assert [x.text for x in a] == [x.text for x in b]
    np.testing.assert_allclose([x.score for x in a], [x.score for x in b], atol=1e-5)


def test_recognizers_in_the_tests_use_the_sessions_compilation_cache(monkeypatch, tmp_path):
    """A Recognizer points JAX at $OFA_JAX_CACHE_DIR, else at the user's ~/.cache/ofa_jax/jax_cache, which
    every other test session and ofa-jax command of that user shares: conftest sets the session's."""
    import jax

    from ofa_jax.recognizer import enable_compilation_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where the user's cache would be
    enable_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == os.environ["OFA_JAX_CACHE_DIR"] != ""
    assert not (tmp_path / "ofa_jax").exists()
