"""``python -m ofa_jax.ocr --distributed --out DIR``: two processes (jax.distributed on localhost)
each write the shard of their contiguous slice of the sorted input list, and the shards together are
what one process reads."""
import json
import os
import shlex
import socket
import subprocess
import sys

import pytest

from test_pages import ROOT, cli_env, micro_dirs, same_pages  # noqa: F401  (micro_dirs: a fixture)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_write_one_shard_each(micro_dirs, tmp_path):
    import jax
    from ofa_jax.ocr import page_row
    from ofa_jax.pages import PageReader
    model, det, pages, _ = micro_dirs
    out = tmp_path / "out"
    port = _free_port()
    cmd = (f"python -m ofa_jax.ocr --model {model} --detector {det} --greedy --out {out} --distributed "
           f"--coordinator-address 127.0.0.1:{port} --num-processes 2")
    procs = [subprocess.Popen([sys.executable] + shlex.split(cmd)[1:] + ["--process-id", str(i), pages],
                              cwd=ROOT, env=cli_env(tmp_path, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, encoding="utf-8") for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert "Traceback" not in stderr and stdout == "", stderr[-3000:]
    # the sorted list is a_broken.png, columns.jpg | receipt.png, sign.png: only shard 0 has a failure
    assert [p.returncode for p in procs] == [1, 0], [e[-2000:] for _, e in outs]
    assert sorted(os.listdir(out)) == ["pages-00000-of-00002.jsonl", "pages-00001-of-00002.jsonl"]
    shards = [[json.loads(line) for line in (out / n).read_text(encoding="utf-8").splitlines()]
              for n in sorted(os.listdir(out))]
    assert [len(s) for s in shards] == [2, 2]

    names = sorted(os.listdir(pages))
    paths = [os.path.join(pages, n) for n in names]
    reader = PageReader.from_pretrained(model, det, beam_size=1, devices=jax.devices()[:1], compilation_cache=False)
    same_pages(shards[0] + shards[1], [page_row(p, r) for p, r in zip(paths, reader(paths))])
