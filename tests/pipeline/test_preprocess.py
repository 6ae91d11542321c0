"""`hpml preprocess` under real `mpirun`: content, resume, crashes, bad images, aborts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import MPI_ENV, REPO, hpml

from hpml.shards.schema import parse_fn
from hpml.shards.verify import verify
from preprocess.covidx.build import build
from preprocess.covidx.options import BuildOptions
from preprocess.plan import read_items
from preprocess.synth.corpus import IEEE_HEADER, _write_dicom, synth

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def split(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("split")
    build(sorted(synth_corpus.iterdir()), out)
    return out


def preprocess(split_dir, out, np_=2, *extra, **kw):
    return hpml("preprocess", "--config", DEMO, "--split-dir", split_dir, "--out", out, *extra, np=np_, **kw)


def records(shard_dir):
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    parse = parse_fn()
    out = set()
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(str(shard_dir / shard["file"])):
            rec = parse(raw)
            out.add((rec["filename"].numpy().decode(), rec["label_name"].numpy().decode(), rec["image"].numpy()))
    return out


def split_count(split_dir):
    return sum(len((split_dir / f"{s}.txt").read_text().splitlines()) for s in ("train", "val", "test"))


def snapshot(shard_dir):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_dir.glob("*.tfrecord")}


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_two_ranks_equal_one_rank_and_verify(split, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    preprocess(split, one, 1)
    proc = preprocess(split, two, 2)
    assert "img/s" in proc.stdout and "skipped 0" in proc.stdout
    assert verify(one) == [] and verify(two) == []
    assert hpml("shards", "verify", two).returncode == 0
    manifest = json.loads((two / "manifest.json").read_text())
    assert sum(t["count"] for t in manifest["totals"].values()) == split_count(split)
    assert {s["rank"] for s in manifest["shards"]} == {0, 1}
    assert records(one) == records(two)  # rank count does not change content
    # A rerun reuses every shard: same bytes, files untouched.
    before = snapshot(two)
    proc = preprocess(split, two, 2)
    assert snapshot(two) == before
    assert json.loads((two / "manifest.json").read_text()) == manifest
    # A changed setting refuses to mix with the old shards unless --force.
    changed = preprocess(split, two, 2, "--set", "preprocess.jpeg_quality=80", check=False)
    assert changed.returncode == 2 and "refusing to mix" in changed.stderr
    preprocess(split, two, 2, "--set", "preprocess.jpeg_quality=80", "--force")
    assert verify(two) == [] and snapshot(two) != before


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_verify_catches_tampering(split, tmp_path):
    out = tmp_path / "s"
    preprocess(split, out, 1)
    shard = sorted(out.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = hpml("shards", "verify", out, check=False)
    assert proc.returncode == 1 and shard.name in proc.stdout


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_sigkill_of_one_rank_then_rerun_completes_without_rewriting(tmp_path):
    synth(tmp_path / "raw", per_class=40, seed=5)
    build(sorted((tmp_path / "raw").iterdir()), tmp_path / "split")
    out = tmp_path / "shards"
    cmd = [
        "mpirun",
        "-np",
        "2",
        sys.executable,
        "-m",
        "hpml.cli",
        "preprocess",
        "--config",
        DEMO,
        "--split-dir",
        tmp_path / "split",
        "--out",
        out,
        "--set",
        "preprocess.shard_mb=0.001",
    ]
    job = subprocess.Popen(
        list(map(str, cmd)), env={**os.environ, **MPI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while len(list((out / ".journal").glob("*-00001-*.json"))) < 5:
        assert time.monotonic() < deadline and job.poll() is None, "job ended before the kill"
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2, ranks  # mpirun starts the ranks as its children
    os.kill(int(ranks[-1]), signal.SIGKILL)
    job.communicate(timeout=60)  # the other rank must not hang
    assert job.returncode != 0
    assert not (out / "manifest.json").exists()  # nothing claims to be complete
    finished = {p.name for p in out.glob("*.tfrecord")}
    before = {k: v for k, v in snapshot(out).items() if k in finished}
    assert finished
    preprocess(tmp_path / "split", out, 2, "--set", "preprocess.shard_mb=0.001")
    assert verify(out) == []
    after = snapshot(out)
    assert all(after[name] == stamp for name, stamp in before.items() if name in after)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(t["count"] for t in manifest["totals"].values()) == split_count(tmp_path / "split")
    assert not list(out.glob(".*.tmp"))


RAMP = np.tile(np.linspace(0, 255, 96).round().astype(np.uint8), (80, 1))


def odd_source(root):
    """An ieee8023-layout source of known pictures: valid-but-odd and broken files."""
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "gray16.png"), RAMP.astype(np.uint16) * 257)
    Image.fromarray(RAMP).convert("CMYK").save(images / "cmyk.jpg", "JPEG", quality=95)
    _write_dicom(images / "mono1.dcm", RAMP / 255.0, "m1", monochrome1=True)
    cv2.imwrite(str(images / "rgba.png"), cv2.cvtColor(RAMP, cv2.COLOR_GRAY2BGRA))
    good = cv2.imencode(".png", RAMP)[1].tobytes()
    rows = []
    for name, label in [
        ("gray16.png", "COVID-19"),
        ("cmyk.jpg", "normal"),
        ("mono1.dcm", "pneumonia"),
        ("rgba.png", "normal"),
        ("truncated.png", "normal"),
        ("empty.png", "pneumonia"),
        ("text.png", "COVID-19"),
    ]:
        rows.append(f"p-{name},0,,,{label},,PA,X-ray,,,{name},,,,,,\n")
    return rows, good


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_bad_and_odd_images_with_two_ranks(tmp_path):
    root = tmp_path / "odd"
    rows, good = odd_source(root)
    for i, name in enumerate(("truncated.png", "empty.png", "text.png")):
        (root / "images" / name).write_bytes(good + bytes(i))  # whole (and unique) at build time...
    (root / "metadata.csv").write_text(",".join(IEEE_HEADER) + "\n" + "".join(rows))
    # The rows name their class as the finding ("normal"): hpml's extended policy reads that.
    build([root], tmp_path / "split", BuildOptions(val_fraction=0, test_fraction=0, labels="extended"))
    # ...and damaged afterwards, as happens on shared storage between the two stages.
    (root / "images" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "text.png").write_text("this is not a PNG\n")
    out = tmp_path / "shards"
    proc = preprocess(tmp_path / "split", out, 2, "--set", "data.image_size=96", check=False)
    # 3 of 7 lost is over preprocess.max_skipped (1 %): the job fails, after writing what it has.
    assert proc.returncode == 2, proc.stderr
    assert "3 of 7 images (42.9%) could not be used, more than preprocess.max_skipped=0.01" in proc.stderr
    assert "skipped 3" in proc.stdout and (out / "manifest.json").is_file()
    proc = preprocess(tmp_path / "split", out, 2, "--set", "data.image_size=96", "--set", "preprocess.max_skipped=0.5")
    assert "skipped 3" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {s["item"].split("/")[-1]: s for s in manifest["skipped"]}
    assert set(reasons) == {"truncated.png", "empty.png", "text.png"}
    assert "truncated PNG" in reasons["truncated.png"]["reason"]
    assert "empty file" in reasons["empty.png"]["reason"]
    assert "unrecognised signature" in reasons["text.png"]["reason"]
    assert all(s["rank"] in (0, 1) and s["path"].endswith(s["item"].split("/")[-1]) for s in reasons.values())
    expected = cv2.resize(RAMP, (96, 96), interpolation=cv2.INTER_AREA).astype(int)
    parse = parse_fn()
    seen = set()
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard["file"])):
            rec = parse(raw)
            name = rec["filename"].numpy().decode().split("/")[-1]
            img = tf.io.decode_image(rec["image"], channels=1).numpy()[:, :, 0].astype(int)
            tolerance = 6 if name == "cmyk.jpg" else 3  # JPEG at quality 95 on top of the source
            assert np.abs(img - expected).mean() < tolerance, name
            assert (rec["height"], rec["width"]) == RAMP.shape
            seen.add(name)
    assert seen == {"gray16.png", "cmyk.jpg", "mono1.dcm", "rgba.png"}


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_unwritable_output_and_missing_inputs_stop_all_ranks(split, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = preprocess(split, blocker / "shards", 2, check=False, timeout=120)
    assert proc.returncode == 2 and "not writable" in proc.stderr and str(blocker) in proc.stderr
    proc = preprocess(tmp_path / "nosplit", tmp_path / "o", 2, check=False, timeout=120)
    assert proc.returncode == 2 and "no split files" in proc.stderr and "nosplit" in proc.stderr


def test_write_failure_on_one_rank_aborts_the_job_promptly(split, tmp_path):
    out = tmp_path / "shards"
    (out / ".train-00001-00000.tfrecord.tmp").mkdir(parents=True)  # rank 1 cannot open its shard
    start = time.monotonic()
    proc = preprocess(split, out, 2, check=False, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert "hpml: error [rank 1/2, phase 'write']: FailedPreconditionError" in proc.stderr
    assert not (out / "manifest.json").exists()


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_real_corpus_two_ranks(real_corpus, tmp_path):
    sources = [real_corpus / d for d in ("covid-chestxray-dataset", "Actualmed-COVID-chestxray-dataset")]
    build(sources, tmp_path / "split", BuildOptions(labels="extended"))  # every frontal film: 129
    out = tmp_path / "shards"
    preprocess(tmp_path / "split", out, 2, "--set", "data.image_size=128", timeout=900)
    assert verify(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(t["count"] for t in manifest["totals"].values())
    assert total == split_count(tmp_path / "split") - len(manifest["skipped"])
    assert total == 129


@pytest.mark.slow  # 15-40 s of MPI preprocessing
def test_missing_images_are_retried_and_changed_sources_reported(corpus_copy, tmp_path):
    build(sorted(corpus_copy.iterdir()), tmp_path / "split")
    gone, changed, other = (Path(item.path) for item in read_items(tmp_path / "split", ["train"])[:3])
    kept = gone.read_bytes()
    gone.unlink()  # e.g. a copy that had not finished, a mount that was down
    changed.write_bytes(other.read_bytes())  # a different picture under the same name
    out = tmp_path / "shards"
    proc = preprocess(tmp_path / "split", out, 2, "--set", "preprocess.max_skipped=0.5")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in manifest["skipped"]] == [str(gone)] and "file not found" in proc.stderr
    assert [c["path"] for c in manifest["changed_sources"]] == [str(changed)]
    assert "differ from the sha256 in split.json" in proc.stdout and str(changed) in proc.stdout
    gone.write_bytes(kept)
    proc = preprocess(tmp_path / "split", out, 2)  # no --force: the missing image is simply retried
    again = json.loads((out / "manifest.json").read_text())
    assert again["skipped"] == [] and again["totals"]["train"]["count"] == manifest["totals"]["train"]["count"] + 1
    assert verify(out) == []
