"""Containment (issue 24): every data path is a regular file inside its source root, and every
name written into a split file can be read back; bad fractions and counts stop a build at once.

The source trees have the real layouts (tests/../shared/data/cxr-real): ieee8023's `Patientid`,
`" url"` header with a trailing empty column (LF), Actualmed's `imagename` (CRLF).
"""

import json
import os
import threading

import cv2
import numpy as np
import pytest
from conftest import hpml

from hpml.core.errors import SourceError, UsageError
from preprocess.covidx.build import build
from preprocess.covidx.options import BuildOptions
from preprocess.covidx.published import Published, import_published
from preprocess.covidx.skips import reason_kind
from preprocess.plan import read_items
from preprocess.splitfile import SplitLine, read_split, write_split

IEEE, ACTMED = "covid-chestxray-dataset", "Actualmed-COVID-chestxray-dataset"
IEEE_HEADER = "Patientid,offset,sex,age,finding,survival,view,modality,date,location,filename,doi, url,license,"
IEEE_HEADER += "clinical notes,other notes,"
ACTMED_HEADER = "patientid,offset,sex,age,finding,survival,temperature,pO2 saturation,view,modality,imagename,"
ACTMED_HEADER += "artifacts/distortion,notes"
DOTDOT, ABSOLUTE, LINK_OUT = "'..' in file name", "absolute file name", "link outside the source root"
FIFO, NEWLINE, PATIENT = "not a regular file", "control character in file name", "control character in patient id"


def image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)  # no two alike
    assert cv2.imwrite(str(path), noise)


def ieee_row(pid, name):
    quoted = '"' + name.replace('"', '""') + '"'
    return f"{pid},0,M,50,COVID-19,,PA,X-ray,,,{quoted},,https://example.org/{pid},,,,"


@pytest.fixture()
def tree(tmp_path):
    """tmp/outside.png and two sources under tmp/raw/ whose rows reach for it in every way."""
    outside = tmp_path / "outside.png"
    image(outside, 999)
    ieee = tmp_path / "raw" / IEEE
    for i in range(5):
        image(ieee / "images" / f"good{i}.png", i)
    image(ieee / "kept" / "inside.png", 50)
    image(ieee / "images" / "new\nline.png", 51)
    (ieee / "images" / "link_out.png").symlink_to(outside)
    (ieee / "images" / "link_in.png").symlink_to("../kept/inside.png")
    os.mkfifo(ieee / "images" / "fifo.png")
    rows = [ieee_row(f"p{i}", f"good{i}.png") for i in range(4)]
    rows += [ieee_row("p10", "../../../outside.png"), ieee_row("p11", str(outside))]
    rows += [ieee_row("p12", "link_out.png"), ieee_row("p13", "link_in.png"), ieee_row("p14", "fifo.png")]
    rows += [ieee_row("p15", "new\nline.png"), ieee_row('"p\n16"', "good4.png")]
    (ieee / "metadata.csv").write_text("\n".join([IEEE_HEADER, *rows]) + "\n")
    act = tmp_path / "raw" / ACTMED
    for i in range(3):
        image(act / "images" / f"a{i}.png", 100 + i)
    rows = [f"ANON{i},,,,COVID-19,,,,AP,X-ray,a{i}.png,," for i in range(3)]
    rows.append("ANON9,,,,COVID-19,,,,AP,X-ray,../outside.png,,")
    (act / "metadata.csv").write_bytes(("\r\n".join([ACTMED_HEADER, *rows]) + "\r\n").encode())
    return tmp_path


def guarded_build(tree, out, **options):
    """build(), failing (not hanging) if it ever opens the FIFO: a reader blocked in open() lets a
    non-blocking writer in, which is the evidence, and closing it hands the reader EOF."""
    fifo, done, opened = tree / "raw" / IEEE / "images" / "fifo.png", threading.Event(), []

    def watch():
        while not done.wait(0.02):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                opened.append(True)
            except OSError:  # ENXIO: nobody is reading it
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        opts = BuildOptions(val_fraction=0.0, test_fraction=0.0, hash_cache=None, workers=1, **options)
        meta = build([tree / "raw" / IEEE, tree / "raw" / ACTMED], out, opts)
    finally:
        done.set()
        watcher.join()
    assert not opened, "the build opened a FIFO named by a row"
    return meta


def used(out):
    roots = json.loads((out / "split.json").read_text())["roots"]
    lines = [x for s in ("train", "val", "test") for x in read_split(out / f"{s}.txt")]
    return {(x.source, x.filename): (roots[x.source] + "/" + x.filename) for x in lines}


def refused(meta):
    return {s["filename"]: reason_kind(s["reason"]) for s in meta["skipped"]}


def test_rows_reaching_outside_the_root_or_no_regular_file_are_counted_skips(tree):
    meta = guarded_build(tree, tree / "split")
    paths = used(tree / "split")
    outside = (tree / "outside.png").resolve()
    assert all(os.path.realpath(p) != str(outside) for p in paths.values())
    assert (IEEE, "images/link_in.png") in paths  # a link that stays inside is followed
    assert (IEEE, "images/good0.png") in paths and (ACTMED, "images/a2.png") in paths
    assert (
        refused(meta).items()
        >= {
            "images/../../../outside.png": DOTDOT,
            "images/../outside.png": DOTDOT,
            str(tree / "outside.png"): ABSOLUTE,
            "images/link_out.png": LINK_OUT,
            "images/fifo.png": FIFO,
            "images/new\nline.png": NEWLINE,
            "images/good4.png": PATIENT,
        }.items()
    )
    assert {k: meta["dropped"][k] for k in (DOTDOT, ABSOLUTE, LINK_OUT, FIFO, NEWLINE, PATIENT)} == {
        DOTDOT: 2,
        ABSOLUTE: 1,
        LINK_OUT: 1,
        FIFO: 1,
        NEWLINE: 1,
        PATIENT: 1,
    }
    why = {s["filename"]: s for s in meta["skipped"]}
    assert (
        "FIFO" in why["images/fifo.png"]["reason"] and "--follow-outside-links" in why["images/link_out.png"]["reason"]
    )
    assert why["images/link_out.png"]["where"].endswith("metadata.csv:8")  # the row, by line


def test_opt_in_follows_a_link_out_of_the_root_and_nothing_else(tree):
    meta = guarded_build(tree, tree / "split", allow_outside_root=True)
    paths = used(tree / "split")
    assert os.path.realpath(paths[(IEEE, "images/link_out.png")]) == str((tree / "outside.png").resolve())
    assert meta["allow_outside_root"] is True
    assert {k: meta["dropped"].get(k) for k in (DOTDOT, ABSOLUTE, LINK_OUT, FIFO)} == {
        DOTDOT: 2,
        ABSOLUTE: 1,
        LINK_OUT: None,
        FIFO: 1,
    }


def test_import_refuses_listed_names_outside_the_images_folder(tmp_path):
    outside = tmp_path / "outside.png"
    image(outside, 999)
    for i in range(4):
        image(tmp_path / "train" / f"t{i}.png", i)
    image(tmp_path / "test" / "s0.png", 10)
    (tmp_path / "train" / "link_out.png").symlink_to(outside)
    listing = [f"{i} t{i}.png COVID-19 cohen" for i in range(4)]
    listing += ["7 ../outside.png COVID-19 cohen", f"8 {outside} pneumonia cohen", "9 link_out.png normal rsna"]
    (tmp_path / "train.txt").write_text("\n".join(listing) + "\n")
    (tmp_path / "test.txt").write_text("20 s0.png normal rsna\n")
    train, test = (
        Published(tmp_path / "train.txt", tmp_path / "train"),
        Published(tmp_path / "test.txt", tmp_path / "test"),
    )
    meta = import_published(train, test, tmp_path / "s", BuildOptions(val_fraction=0.0))
    names = {x.filename for s in ("train", "val", "test") for x in read_split(tmp_path / "s" / f"{s}.txt")}
    assert names == {"t0.png", "t1.png", "t2.png", "t3.png", "s0.png"}
    assert refused(meta) == {"../outside.png": DOTDOT, str(outside): ABSOLUTE, "link_out.png": LINK_OUT}
    assert meta["dropped"] == {DOTDOT: 1, ABSOLUTE: 1, LINK_OUT: 1}
    assert meta["missing_images"][LINK_OUT]["count"] == 1
    opted = import_published(train, test, tmp_path / "o", BuildOptions(val_fraction=0.0, allow_outside_root=True))
    assert opted["images"]["train"] == 5 and opted["dropped"] == {DOTDOT: 1, ABSOLUTE: 1}


@pytest.mark.parametrize(
    ("patient", "filename"),
    [
        ("p1", "a\nb.png"),
        ("p1", "a\tb.png"),
        ("p1", "a\u2028b.png"),
        ("p\r1", "a.png"),
        ("p1", "../a.png"),
        ("p1", "/a.png"),
    ],
)
def test_split_file_writer_refuses_a_line_it_could_not_read_back(tmp_path, patient, filename):
    good = SplitLine("p0", "images/ok.png", "normal", "src")
    with pytest.raises(ValueError, match=r"cannot write (patient id|file name) .* into a split file"):
        write_split(tmp_path / "train.txt", [good, SplitLine(patient, filename, "normal", "src")])
    assert not (tmp_path / "train.txt").exists()


def test_split_file_reader_names_file_and_line_of_a_control_character(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("p0 a.png normal src\r\np1 b.png normal src\np2 c\x0cd.png normal src\np3 e.png normal src\n")
    with pytest.raises(SourceError, match=r"train\.txt:3: control character '\\x0c'"):
        read_split(path)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"--val-fraction 0\.6 \+ --test-fraction 0\.5"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"--val-fraction 0\.5 \+ --test-fraction 0\.5"),
        ({"val_fraction": 1.5}, r"--val-fraction 1\.5"),
        ({"test_fraction": -0.1}, r"--test-fraction -0\.1"),
        ({"test_per_class": {"normal": 3, "pneumonia": -1}}, r"--test-per-class pneumonia=-1"),
    ],
)
def test_bad_fractions_and_counts_are_refused_naming_the_option(tmp_path, options, named):
    with pytest.raises(UsageError, match=named):
        build([tmp_path / "no-such-source"], tmp_path / "out", BuildOptions(**options))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "--val-fraction 0.6 + --test-fraction 0.5"),
        (["--test-per-class", "-2"], "--test-per-class"),
        (["--test-per-class", "normal=3,COVID-19=-1"], "--test-per-class"),
    ],
)
def test_cli_refuses_them_before_any_work(tmp_path, args, named):
    proc = hpml(
        "covidx", "build", "--sources", tmp_path / "no-such-source", "--out", tmp_path / "o", *args, check=False
    )
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
    assert "source folder not found" not in proc.stderr and not (tmp_path / "o").exists()


def test_preprocess_refuses_a_split_row_that_escapes_after_the_build(tree, tmp_path):
    """A split file edited by hand, or a link planted after the build, stops preprocessing by name."""
    out = tmp_path / "split"
    guarded_build(tree, out)
    assert read_items(out, ["train"])  # as built: every row contained
    train = out / "train.txt"
    good = train.read_text().splitlines()[0]
    planted = tree / "raw" / IEEE / good.split()[1]
    planted.unlink()
    planted.symlink_to(tree / "outside.png")
    with pytest.raises(SourceError, match=r"train.txt: link outside the source root"):
        read_items(out, ["train"])
    planted.unlink()
    train.write_text(good.replace(good.split()[1], "../../../outside.png") + "\n")
    with pytest.raises(SourceError, match=r"train.txt: '..' in file name"):
        read_items(out, ["train"])
