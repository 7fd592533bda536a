"""Long decodes: a fixed number of compilations whatever the image sizes (bucketing), flat memory.
The numbers for 2,000 images are in bench/RESULTS.md (bench/bench_decode_memory.py)."""
import pytest

from bench.bench_decode_memory import run


def test_no_recompilation_over_varied_images(tmp_path):
    """120 images of 1-1,500 px widths and every aspect ratio, PNG/JPEG, one corrupt, a partial last
    batch: everything compiles during the first batch, nothing after."""
    r = run(n=122, batch_size=4, size=64, beam=2, max_len=4, workdir=str(tmp_path))
    assert r["decoded"] == 121 and r["failed"] == 1
    assert r["compilations_first_batch"] > 0
    assert r["compilations_after_first_batch"] == 0, r


@pytest.mark.slow
def test_2000_images_memory_stays_flat(tmp_path):
    r = run(n=2000, batch_size=8, size=160, beam=5, max_len=16, workdir=str(tmp_path))
    assert r["decoded"] == 1980 and r["failed"] == 20
    assert r["compilations_after_first_batch"] == 0, r
    # flat: less than 10 MB more per 1,000 images after warm-up, end within 50 MB of the warm level
    assert r["rss_growth_mb_per_1000_images"] < 10, r
    assert r["rss_mb_end"] - r["rss_mb_after_warmup"] < 50, r
