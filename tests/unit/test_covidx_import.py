"""`covidx import` on lines copied from the published COVIDx label files, every version."""

import json

import cv2
import numpy as np
import pytest
from conftest import hpml

from hpml.core.errors import SourceError
from preprocess.covidx.published import Published, import_published
from preprocess.splitfile import parse_line, read_split

# Real lines (lindawangg/COVID-Net labels/): 3 columns (COVIDx2, and the RSNA lines of 7A),
# 4 columns (7A onwards), SIRM patient ids with a space (7A-8B), binary files (8B).
COVIDX2_TEST = [
    "47c78742-4998-4878-aec4-37b11b1354ac 47c78742-4998-4878-aec4-37b11b1354ac.png normal",
    "8 SARS-10.1148rg.242035193-g04mr34g05x-Fig5-day9.jpeg pneumonia",
    "bd8facb9-dce0-4048-8249-e6078b28e1b7 bd8facb9-dce0-4048-8249-e6078b28e1b7.png pneumonia",
]
COVIDX7A_TRAIN = [
    "3 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg pneumonia cohen",
    "3 SARS-10.1148rg.242035193-g04mr34g0-Fig8b-day5.jpeg pneumonia cohen",
    "2 auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg COVID-19 cohen",
    "COVID 100 COVID(100).png COVID-19 sirm",
    "COVID 101 COVID(101).png COVID-19 sirm",
    "25c7d4f1-d16e-4fba-9155-8f79a396aa81 25c7d4f1-d16e-4fba-9155-8f79a396aa81.png pneumonia rsna",
    "d7b2ba1c-a257-4242-b3bc-928e1d695167 d7b2ba1c-a257-4242-b3bc-928e1d695167.png normal rsna",
    "d7b55359-5045-410e-9820-4776cdaa137b d7b55359-5045-410e-9820-4776cdaa137b.png normal rsna",
]
COVIDX7A_TEST = [
    "COVID-00025 COVID-00025.jpg COVID-19 fig1",
    "ANON45 CR.1.2.840.113564.1722810170.20200320071047906500.1003000225002.png COVID-19 actmed",
    "COVID 70 COVID(70).png COVID-19 sirm",
    "47c78742-4998-4878-aec4-37b11b1354ac 47c78742-4998-4878-aec4-37b11b1354ac.png normal",
]
COVIDX8B_TEST = [
    "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord",
    "47c78742-4998-4878-aec4-37b11b1354ac 47c78742-4998-4878-aec4-37b11b1354ac.png negative rsna",
]
CXR3A_TEST = ["419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png COVID-19 ricord"]


@pytest.mark.parametrize(
    "line, expected",
    [
        (COVIDX2_TEST[1], ("8", "SARS-10.1148rg.242035193-g04mr34g05x-Fig5-day9.jpeg", "pneumonia", "")),
        (COVIDX7A_TRAIN[3], ("COVID 100", "COVID(100).png", "COVID-19", "sirm")),
        (COVIDX7A_TEST[1], ("ANON45", COVIDX7A_TEST[1].split()[1], "COVID-19", "actmed")),
        (CXR3A_TEST[0], ("419639-003251", "MIDRC-RICORD-1C-419639-003251-46647-0.png", "COVID-19", "ricord")),
    ],
)
def test_published_line_formats(line, expected):
    x = parse_line(line, "f:1")
    assert (x.patient, x.filename, x.label, x.source) == expected


def test_binary_lines_need_the_option():
    with pytest.raises(SourceError, match=r"f:7: unknown label .*--binary"):
        parse_line(COVIDX8B_TEST[0], "f:7")
    pos, neg = (parse_line(line, "f:1", binary=True) for line in COVIDX8B_TEST)
    assert (pos.label, pos.source, neg.label, neg.source) == ("COVID-19", "ricord", "normal", "rsna")


def test_unknown_label_is_refused_with_its_line_number(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(COVIDX7A_TRAIN[:2]) + "\n3 x.jpeg Pneumonia/Viral cohen\n")
    with pytest.raises(SourceError, match=r"train.txt:3: unknown label 'Pneumonia/Viral / cohen'"):
        read_split(path)


def published(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def images_for(folder, lines, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    for i, line in enumerate(lines):
        name = parse_line(line, "", binary=True).filename if "positive" in line or "negative" in line else None
        name = name or parse_line(line, "").filename
        if name not in skip:
            cv2.imwrite(str(folder / name), np.full((16, 16), i * 10, np.uint8))


def test_import_every_version(tmp_path):
    train = published(tmp_path, "train_COVIDx7A.txt", COVIDX7A_TRAIN + COVIDX7A_TRAIN[-2:])  # RSNA repeats
    test = published(tmp_path, "test_COVIDx7A.txt", COVIDX7A_TEST)
    images_for(tmp_path / "train", COVIDX7A_TRAIN)
    images_for(tmp_path / "test", COVIDX7A_TEST)
    from preprocess.covidx.options import BuildOptions

    train_set, test_set = Published(train, tmp_path / "train"), Published(test, tmp_path / "test")
    meta = import_published(train_set, test_set, tmp_path / "s", BuildOptions(val_fraction=0.3))
    assert meta["duplicate_lines_dropped"]["train"] == 2
    assert meta["images"]["train"] + meta["images"]["val"] == len(COVIDX7A_TRAIN)
    got = read_split(tmp_path / "s" / "test.txt")
    assert {(x.patient, x.filename) for x in got} >= {("COVID 70", "COVID(70).png"), ("COVID-00025", "COVID-00025.jpg")}
    # Patient 3's two films land on one side.
    sides = [s for s in ("train", "val") for x in read_split(tmp_path / "s" / f"{s}.txt") if x.patient == "3"]
    assert len(sides) == 2 and len(set(sides)) == 1


def test_import_binary_files(tmp_path):
    train = published(tmp_path, "train_COVIDx8B.txt", COVIDX8B_TEST)
    test = published(tmp_path, "test_COVIDx8B.txt", COVIDX8B_TEST)
    images_for(tmp_path / "img", COVIDX8B_TEST)
    args = ("covidx", "import", train, test, "--train-images", tmp_path / "img", "--test-images", tmp_path / "img")
    proc = hpml(*args, "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2 and "train_COVIDx8B.txt:1" in proc.stderr and "--binary" in proc.stderr
    assert not (tmp_path / "s").exists()
    hpml(*args, "--out", tmp_path / "s", "--binary", "--val-fraction", "0")
    meta = json.loads((tmp_path / "s" / "split.json").read_text())
    assert meta["binary"] is True and meta["counts"]["test"] == {"normal": 1, "pneumonia": 0, "COVID-19": 1}


def test_import_checks_images_before_writing(tmp_path):
    train = published(tmp_path, "train.txt", COVIDX7A_TRAIN)
    test = published(tmp_path, "test.txt", COVIDX2_TEST)
    gone = parse_line(COVIDX7A_TRAIN[4], "").filename
    images_for(tmp_path / "train", COVIDX7A_TRAIN, skip={gone})
    (tmp_path / "test").mkdir()
    proc = hpml(
        "covidx",
        "import",
        train,
        test,
        "--train-images",
        tmp_path / "train",
        "--test-images",
        tmp_path / "test",
        "--out",
        tmp_path / "s",
        check=False,
    )
    assert proc.returncode == 2 and "test.txt: none of its images were found" in proc.stderr
    assert not (tmp_path / "s" / "train.txt").exists()  # nothing written that looks whole
    images_for(tmp_path / "test", COVIDX2_TEST)
    proc = hpml(
        "covidx",
        "import",
        train,
        test,
        "--train-images",
        tmp_path / "train",
        "--test-images",
        tmp_path / "test",
        "--out",
        tmp_path / "s",
    )
    assert "skipped 1 listed image(s): file not found" in proc.stderr and gone in proc.stderr
    meta = json.loads((tmp_path / "s" / "split.json").read_text())
    assert meta["missing_images"]["file not found"]["count"] == 1
    assert meta["skipped"][0]["where"].endswith(gone)
    assert meta["images"]["train"] + meta["images"]["val"] == len(COVIDX7A_TRAIN) - 1
