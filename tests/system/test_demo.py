"""`hpml demo`: the whole pipeline end to end, rerun reuses finished stages, and real data."""

import json

from conftest import hpml


def test_demo_end_to_end_then_rerun_reuses(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--per-class", "30", "--set", "train.epochs=2"]
    first = hpml(*args, timeout=900)
    for heading in ("### Sensitivity (%)", "### Positive Predictive Value (%)", "### Confusion matrix"):
        assert first.stdout.count(heading) == 2  # val and test
    assert "hpml demo finished" in first.stdout
    for path in ("run/eval/val/report.md", "run/eval/test/report.md", "run/curves.png", "shards/manifest.json"):
        assert (out / path).is_file(), path
    second = hpml(*args, timeout=900)
    assert "synthetic corpus: reusing" in second.stdout
    assert "resumed from ckpt-" in second.stderr  # training was finished: nothing retrained
    report = json.loads((out / "shards" / "preprocess-report.json").read_text())
    assert report["images"] == 0 and sum(r["reused"] for r in report["per_rank"]) > 0  # every shard reused


def test_demo_on_the_real_corpus(real_corpus, tmp_path):
    proc = hpml("demo", "--data", real_corpus, "--out", tmp_path / "real", "--set", "train.epochs=1", timeout=900)
    assert "hpml demo finished" in proc.stdout
    metrics = json.loads((tmp_path / "real" / "run" / "eval" / "test" / "metrics.json").read_text())
    split = json.loads((tmp_path / "real" / "split" / "split.json").read_text())
    assert metrics["count"] == split["images"]["test"] > 0
