"""The few-shot benchmark runs end to end at a toy size and reports what the cache saves.

Only the report's shape is checked: timings are measured on demand (`python -m benchmarks.run`),
never asserted in tests.
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_fewshot_benchmark_reports_the_decoder_epoch_without_cache():
    from benchmarks.fewshot import measure

    row = measure(64, repeats=1)
    for key in ("decoder_epoch_s", "decoder_epoch_nocache_s", "speedup_vs_nocache", "full_finetune_epoch_s",
                "fast_encoder_forward_s"):
        assert row[key] > 0, key
    assert "encoder_forward_s" not in row  # the encoder row names the encoder it times
