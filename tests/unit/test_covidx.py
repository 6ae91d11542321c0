"""COVIDx build on the synthetic corpus (every layout, bad inputs) and on the real files."""

import json
import shutil

import pytest
from conftest import hpml

from hpml.core.errors import SourceError
from preprocess.covidx.build import build
from preprocess.covidx.options import BuildOptions
from preprocess.covidx.sources.detect import detect_layout
from preprocess.splitfile import load_roots, read_split

LAYOUTS = {
    "covid-chestxray-dataset": "ieee8023",
    "Actualmed-COVID-chestxray-dataset": "actualmed",
    "Figure1-COVID-chestxray-dataset": "figure1",
    "rsna": "rsna",
    "COVID-19_Radiography_Database": "sirm",
}


def splits(out):
    return {s: read_split(out / f"{s}.txt") for s in ("train", "val", "test")}


def assert_leak_free(out):
    meta = json.loads((out / "split.json").read_text())
    seen_patients, seen_hashes = {}, {}
    for split, lines in splits(out).items():
        for x in lines:
            key = (x.source, x.patient)
            assert seen_patients.setdefault(key, split) == split, f"patient {key} in two splits"
            digest = meta["sha256"][f"{x.source}/{x.filename}"]
            assert seen_hashes.setdefault(digest, split) == split, f"{x.filename} in two splits"
    assert len(seen_hashes) == sum(meta["images"].values())  # no duplicate content at all
    for group in meta["near_duplicates"]:  # re-encoded copies of one radiograph: one side
        assert len(set(group["splits"]) - {"dropped"}) <= 1, group
    return meta


def test_every_layout_is_detected_and_read(synth_corpus, tmp_path):
    for name, layout in LAYOUTS.items():
        assert detect_layout(synth_corpus / name) == layout
    meta = build(sorted(synth_corpus.iterdir()), tmp_path / "split")
    assert_leak_free(tmp_path / "split")
    assert meta["images"]["train"] > meta["images"]["test"] > 0
    for split in ("train", "val", "test"):
        assert all(meta["counts"][split][c] for c in ("normal", "pneumonia", "COVID-19"))
    assert set(meta["roots"]) == set(LAYOUTS)
    assert meta["label_policy"] == "covidnet"
    assert meta["dropped"] == {
        "finding not in COVID-Net's table": 4,  # ARDS, Pneumocystis, 2 Actualmed "No finding"
        "RSNA 'No Lung Opacity / Not Normal' with Target 0": 2,
        "URL also in ieee8023": 1,
        "no finding given": 1,
        "view not in COVID-Net's list": 1,
    }
    rsna = meta["sources"]["rsna"]["quirks"]["RSNA box rows collapsed (one image per patient)"]
    assert rsna > 0
    roots = load_roots(tmp_path / "split")
    for lines in splits(tmp_path / "split").values():
        for x in lines:
            assert (roots[x.source] / x.filename).is_file()
    # Every image of the corpus but the left-out rows is used exactly once: 12 per class, plus
    # ieee8023's re-encoded copy of a Figure1 film and SIRM "COVID 217" (kept, as COVID-Net did).
    lines = [x for ls in splits(tmp_path / "split").values() for x in ls]
    assert len(lines) == len({(x.source, x.filename) for x in lines}) == 38
    normals = {x.source for x in lines if x.label == "normal"}
    assert normals == {"rsna"}  # COVIDx's only normals


def test_same_seed_same_bytes_other_seed_other_split(synth_corpus, tmp_path):
    sources = sorted(synth_corpus.iterdir())
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build(sources, tmp_path / name, BuildOptions(seed=seed, val_fraction=0.2, test_fraction=0.2))
    for split in ("train.txt", "val.txt", "test.txt", "split.json"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()
    assert (tmp_path / "a" / "test.txt").read_bytes() != (tmp_path / "c" / "test.txt").read_bytes()


def test_test_per_class_targets(synth_corpus, tmp_path):
    opts = BuildOptions(seed=0, val_fraction=0.0, test_per_class={"normal": 3, "pneumonia": 3, "COVID-19": 3})
    meta = build(sorted(synth_corpus.iterdir()), tmp_path / "s", opts)
    for cls in ("normal", "pneumonia", "COVID-19"):
        assert 3 <= sum(meta["counts"]["test"][cls].values()) <= 4  # whole patients: may overshoot


def test_bad_inputs_are_skipped_and_reported(corpus_copy, tmp_path):
    ieee = corpus_copy / "covid-chestxray-dataset"
    images = sorted(p for p in (ieee / "images").iterdir() if p.name.startswith(("cov", "pne")))  # used rows
    images[0].unlink()  # missing file
    images[1].write_bytes(images[1].read_bytes()[:200])  # truncated
    images[2].write_bytes(b"")  # zero bytes
    images[3].write_text("not an image")  # text named like an image
    shutil.copy(images[5], images[4])  # exact duplicate content under another name
    meta_csv = ieee / "metadata.csv"
    text = meta_csv.read_text()
    text += "p9,0,,,Tuberculoma of the moon,,PA,X-ray,,,x.png,,,,,,\n"  # unknown finding
    text += "p9,0,,,COVID-19,,PA,CT,,,x.png,,,,,,\n"  # not an X-ray
    meta_csv.write_text(text)
    meta = build(sorted(corpus_copy.iterdir()), tmp_path / "s")
    reasons = [s["reason"] for s in meta["skipped"]]
    for expected in (
        "file not found",
        "truncated",
        "empty file",
        "unrecognised signature",
        "duplicate of",
        "finding not in COVID-Net's table ('Tuberculoma of the moon')",
    ):
        assert any(expected in r for r in reasons), expected
    # Missing images: a summary by reason (count, first paths) beside the full list.
    assert meta["missing_images"]["file not found"]["count"] == 2  # images[0] and the CT row's x.png
    assert str(images[0]) in meta["missing_images"]["file not found"]["first"]
    extended = build(sorted(corpus_copy.iterdir()), tmp_path / "e", BuildOptions(labels="extended"))
    assert any("not an X-ray" in s["reason"] for s in extended["skipped"])  # COVID-Net has no such check
    named = {s["filename"] for s in meta["skipped"]}
    assert {images[i].name for i in range(4)} <= {n.split("/")[-1] for n in named}
    assert_leak_free(tmp_path / "s")


def test_structurally_broken_inputs_stop_with_file_and_line(corpus_copy, tmp_path):
    ieee = corpus_copy / "covid-chestxray-dataset" / "metadata.csv"
    ieee.write_text("Patientid,view\n1,PA\n")  # no finding / filename columns
    with pytest.raises(SourceError, match=r"metadata.csv:1: missing column\(s\) finding"):
        build([corpus_copy / "covid-chestxray-dataset"], tmp_path / "s")
    ieee.write_text("")
    with pytest.raises(SourceError, match="metadata.csv: empty file"):
        build([corpus_copy / "covid-chestxray-dataset"], tmp_path / "s")
    (tmp_path / "random").mkdir()
    with pytest.raises(SourceError, match="matches no known source layout"):
        build([tmp_path / "random"], tmp_path / "s")


def test_nothing_usable_exits_non_zero_with_reason(corpus_copy, tmp_path):
    shutil.rmtree(corpus_copy / "rsna" / "stage_2_train_images")
    proc = hpml("covidx", "build", "--sources", corpus_copy / "rsna", "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2
    assert "no usable images" in proc.stderr and "file not found" in proc.stderr


def test_latin1_csv_with_crlf_and_odd_headers(corpus_copy, tmp_path):
    am = corpus_copy / "Actualmed-COVID-chestxray-dataset" / "metadata.csv"
    raw = am.read_bytes().replace(b"patientid,", b" PatientID ,", 1)
    am.write_bytes(raw + "ANONé,,,,COVID-19,,,,L,X-ray,x.png,,\r\n".encode("latin-1"))
    meta = build([am.parent], tmp_path / "s")
    assert meta["sources"][am.parent.name]["csv_encoding"]["metadata.csv"] == "cp1252"
    # COVID-Net reads Actualmed without a view filter: the row counts, its image is missing.
    assert any(s["reason"] == "file not found" and s["filename"] == "images/x.png" for s in meta["skipped"])
    meta = build([am.parent], tmp_path / "e", BuildOptions(labels="extended"))
    assert any("not a frontal view" in s["reason"] for s in meta["skipped"])


def test_conflicting_labels_keep_patient_together(corpus_copy, tmp_path):
    am = corpus_copy / "Actualmed-COVID-chestxray-dataset" / "metadata.csv"
    lines = am.read_bytes().decode().split("\r\n")
    # Give the first COVID patient's id to a normal image: one patient, two labels.
    covid = next(line for line in lines[1:] if ",COVID-19," in line)
    normal_i = next(i for i, line in enumerate(lines) if ",No finding," in line)
    lines[normal_i] = covid.split(",")[0] + lines[normal_i][lines[normal_i].index(",") :]
    am.write_bytes("\r\n".join(lines).encode())
    meta = build([am.parent], tmp_path / "s", BuildOptions(labels="extended"))  # "No finding" counts there
    assert meta["conflicting_label_patients"] == [f"{am.parent.name}:{covid.split(',')[0]}"]
    assert_leak_free(tmp_path / "s")


def test_cli_prints_distribution_table(synth_corpus, tmp_path):
    proc = hpml("covidx", "build", "--sources", *sorted(synth_corpus.iterdir()), "--out", tmp_path / "s")
    assert "| train |" in proc.stdout and "COVID-19" in proc.stdout


def test_real_corpus_build(real_corpus, tmp_path):
    sources = [real_corpus / d for d in ("covid-chestxray-dataset", "Actualmed-COVID-chestxray-dataset", "rsna")]
    meta = build(sources, tmp_path / "s", BuildOptions(seed=0))
    assert_leak_free(tmp_path / "s")
    quirks = meta["sources"]
    assert quirks["covid-chestxray-dataset"]["quirks"]["column 'Patientid' read as 'patientid'"] == 1
    assert quirks["covid-chestxray-dataset"]["quirks"]["column ' url' read as 'url'"] == 1
    # 30,142 label rows for 26,605 patients: 3,537 extra box rows collapsed.
    assert quirks["rsna"]["quirks"]["RSNA box rows collapsed (one image per patient)"] == 3537
    assert meta["dropped"]["RSNA 'No Lung Opacity / Not Normal' with Target 0"] == 11787
    assert meta["dropped"]["file not found"] == 8818 + 6000  # labels only, no DICOMs here
    assert meta["missing_images"]["file not found"]["count"] == 14818
    assert len(meta["missing_images"]["file not found"]["first"]) == 5  # the log shows as many
    assert meta["dropped"]["view not in COVID-Net's list"] == 11  # the lateral (L) films
    assert meta["dropped"]["no finding given"] == 2  # Actualmed's unconfirmed rows
    # ARDS 4 + Pneumocystis 2 + No Finding 1 (ieee8023, some of them lateral) + Actualmed No finding 8.
    assert meta["dropped"]["finding not in COVID-Net's table"] == 14
    assert sum(meta["images"].values()) == 115
    # ieee8023 patient 51: the same PA film posted on day 3 and day 9 (SIRM caso 34), cropped differently.
    assert [g["images"] for g in meta["near_duplicates"]] == [
        [
            "covid-chestxray-dataset/images/F4341CE7-73C9-45C6-99C8-8567A5484B63.jpeg",
            "covid-chestxray-dataset/images/E63574A7-4188-4C8D-8D17-9D67A18A1AFA.jpeg",
        ]
    ]
