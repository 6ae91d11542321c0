"""COVIDx as COVID-Net builds it: label policy, patients, re-encoded copies, published test lists.

The expected labels on the real corpus are computed here from the metadata with pandas, rule for
rule as create_COVIDx.ipynb does (its table and view list written out again below), never by
calling preprocess.covidx.labels.
"""

import json

import pandas as pd
import pytest

from preprocess.covidx.build import build
from preprocess.covidx.options import BuildOptions
from preprocess.covidx.sources.detect import scan_source
from preprocess.splitfile import read_split
from preprocess.synth.corpus import synth

FIG1 = "Figure1-COVID-chestxray-dataset"
IEEE = "covid-chestxray-dataset"
SIRM = "COVID-19_Radiography_Database"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("phash") / "phash.npz"


def lines_of(out):
    return {s: read_split(out / f"{s}.txt") for s in ("train", "val", "test")}


def where(out):
    return {(x.source, x.filename): (s, x) for s, ls in lines_of(out).items() for x in ls}


def test_blank_view_figure1_rows_are_kept(synth_corpus, tmp_path, cache):
    blank = [r for r in pd.read_csv(synth_corpus / FIG1 / "metadata.csv", dtype=str).itertuples() if pd.isna(r.view)]
    assert blank, "the synthetic Figure1 metadata must have blank views"
    for policy in ("covidnet", "extended"):
        build(sorted(synth_corpus.iterdir()), tmp_path / policy, BuildOptions(labels=policy, hash_cache=cache))
        placed = where(tmp_path / policy)
        for r in blank:
            assert (FIG1, f"images/{r.patientid}.jpg") in placed, (policy, r.patientid)


def test_lettered_figure1_ids_are_one_patient_in_20_seeds(synth_corpus, tmp_path, cache):
    lettered = sorted(p.name for p in (synth_corpus / FIG1 / "images").glob("COVID-*[ab].jpg"))
    assert len(lettered) >= 2
    for seed in range(20):
        out = tmp_path / str(seed)
        build(
            sorted(synth_corpus.iterdir()),
            out,
            BuildOptions(seed=seed, val_fraction=0.3, test_fraction=0.3, hash_cache=cache),
        )
        placed = where(out)
        sides = {placed[(FIG1, f"images/{n}")][0] for n in lettered}
        assert len(sides) == 1, f"seed {seed}: {lettered} split over {sides}"
        assert {placed[(FIG1, f"images/{n}")][1].patient for n in lettered} == {lettered[0][:-5]}


def test_reencoded_copy_across_sources_stays_with_its_original_in_every_seed(synth_corpus, tmp_path, cache):
    copy = (IEEE, "images/figure1-5e73d7ae897e27ff066a30cb-98.jpeg")
    for seed in range(20):
        out = tmp_path / str(seed)
        meta = build(
            sorted(synth_corpus.iterdir()),
            out,
            BuildOptions(seed=seed, val_fraction=0.3, test_fraction=0.3, hash_cache=cache),
        )
        (group,) = meta["near_duplicates"]  # exactly the planted pair, no false matches
        assert f"{copy[0]}/{copy[1]}" in group["images"] and group["images"][0].startswith(FIG1)
        placed = where(out)
        assert len({placed[tuple(i.split("/", 1))][0] for i in group["images"]}) == 1, f"seed {seed}"
    dropped = build(
        sorted(synth_corpus.iterdir()), tmp_path / "drop", BuildOptions(drop_duplicates=True, hash_cache=cache)
    )
    assert copy not in where(tmp_path / "drop")
    assert any(s["reason"].startswith("re-encoded copy of " + FIG1) for s in dropped["skipped"])


def test_excluded_findings_absent_by_default_present_under_extended(synth_corpus, tmp_path, cache):
    excluded = {
        (IEEE, "images/ards-0.jpeg"): "pneumonia",
        (IEEE, "images/pneumocystis-0.png"): "pneumonia",
        ("Actualmed-COVID-chestxray-dataset", "images/nofinding-0.png"): "normal",
        ("Actualmed-COVID-chestxray-dataset", "images/nofinding-1.png"): "normal",
    }
    build(sorted(synth_corpus.iterdir()), tmp_path / "d", BuildOptions(hash_cache=cache))
    build(sorted(synth_corpus.iterdir()), tmp_path / "e", BuildOptions(labels="extended", hash_cache=cache))
    default, extended = where(tmp_path / "d"), where(tmp_path / "e")
    for key, label in excluded.items():
        assert key not in default, key
        assert extended[key][1].label == label, key
    assert {x.source for _, x in default.values() if x.label == "normal"} == {"rsna"}


def test_sirm_source(synth_corpus, tmp_path, cache):
    build(sorted(synth_corpus.iterdir()), tmp_path / "d", BuildOptions(hash_cache=cache))
    meta = build(sorted(synth_corpus.iterdir()), tmp_path / "e", BuildOptions(labels="extended", hash_cache=cache))
    default, extended = where(tmp_path / "d"), where(tmp_path / "e")
    assert (SIRM, "COVID/COVID (9001).png") not in default  # its URL is an ieee8023 URL
    # "COVID 217" is on the discard list, but the notebook's slice never matches "COVID n" names.
    assert default[(SIRM, "COVID/COVID (217).png")][1].patient == "COVID 217"
    assert (SIRM, "COVID/COVID (217).png") not in extended
    assert any("discard list" in s["reason"] for s in meta["skipped"])
    # A patient id and a file name with spaces survive our own split files (tab-separated lines).
    text = "".join((tmp_path / "d" / f"{s}.txt").read_text() for s in ("train", "val", "test"))
    assert "COVID 1\tCOVID/COVID (1).png\tCOVID-19\tCOVID-19_Radiography_Database\n" in text


def test_sirm_rows_are_dropped_only_when_ieee8023_is_built_too(synth_corpus, tmp_path, cache):
    alone = build(
        [synth_corpus / SIRM], tmp_path / "s", BuildOptions(hash_cache=cache, val_fraction=0, test_fraction=0)
    )
    assert alone["images"]["train"] == len(list((synth_corpus / SIRM / "COVID").iterdir()))  # 9001 kept too


@pytest.mark.parametrize("per_class", [12, 30])
def test_every_class_in_every_split_for_small_corpora(tmp_path, cache, per_class):
    synth(tmp_path / "raw", per_class=per_class, seed=per_class)
    meta = build(sorted((tmp_path / "raw").iterdir()), tmp_path / "split", BuildOptions(hash_cache=cache))
    for split in ("train", "val", "test"):
        for cls in ("normal", "pneumonia", "COVID-19"):
            assert sum(meta["counts"][split][cls].values()) >= 1, (split, cls)
    assert meta["near_duplicates"] and len(meta["near_duplicates"]) == 1


def test_test_list_pins_test_membership(synth_corpus, tmp_path, cache):
    rsna = read_csv_ids(synth_corpus / "rsna" / "stage_2_detailed_class_info.csv")
    normal = next(pid for pid, cls in rsna if cls == "Normal")
    fig1 = sorted(p.name for p in (synth_corpus / FIG1 / "images").glob("COVID-*a.jpg"))[0]
    listed = tmp_path / "test_COVIDx7A.txt"
    listed.write_text(
        f"{normal} {normal}.png normal\n"  # COVIDx 2-6 style: 3 columns, RSNA as .png
        f"{fig1[:-4]} {fig1} COVID-19 fig1\n"
        "COVID 1 COVID(1).png COVID-19 sirm\n"  # spaces removed, as the notebook wrote it
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png COVID-19 ricord\n"
        "COVID 70 COVID(70).png COVID-19 sirm\n"
    )
    meta = build(sorted(synth_corpus.iterdir()), tmp_path / "s", BuildOptions(test_list=listed, hash_cache=cache))
    test = {(x.source, x.filename) for x in lines_of(tmp_path / "s")["test"]}
    assert test == {
        ("rsna", f"stage_2_train_images/{normal}.dcm"),
        (FIG1, f"images/{fig1}"),
        (SIRM, "COVID/COVID (1).png"),
    }
    info = meta["test_list"]
    assert (info["listed"], info["pinned"], len(info["missing"])) == (5, 3, 2)
    assert "not one hpml builds" in info["missing"][0] and "COVID 70" in info["missing"][1]
    # The pinned patient's other film (and the ieee8023 copy of its picture) go nowhere.
    assert sorted(info["held_out_relatives"]) == [
        f"{FIG1}/images/{fig1[:-5]}b.jpg",
        f"{IEEE}/images/figure1-5e73d7ae897e27ff066a30cb-98.jpeg",
    ]
    placed = where(tmp_path / "s")
    assert all(tuple(r.split("/", 1)) not in placed for r in info["held_out_relatives"])


def read_csv_ids(path):
    frame = pd.read_csv(path, dtype=str)
    return list(zip(frame["patientId"], frame["class"], strict=True))


# --- COVID-Net's rules, written out from create_COVIDx.ipynb, applied with pandas as it does ---
NOTEBOOK_MAPPING = {
    "COVID-19": "COVID-19",
    "SARS": "pneumonia",
    "MERS": "pneumonia",
    "Streptococcus": "pneumonia",
    "Klebsiella": "pneumonia",
    "Chlamydophila": "pneumonia",
    "Legionella": "pneumonia",
    "E.Coli": "pneumonia",
    "Normal": "normal",
    "Lung Opacity": "pneumonia",
    "1": "pneumonia",
}
NOTEBOOK_VIEWS = ["PA", "AP", "AP Supine", "AP semi erect", "AP erect"]


def notebook_labels(real):
    labels = {}
    cohen = pd.read_csv(real / IEEE / "metadata.csv")
    cohen = cohen[cohen.view.isin(NOTEBOOK_VIEWS)]
    for _, row in cohen.iterrows():
        f = row["finding"].split("/")[-1]
        if f in NOTEBOOK_MAPPING:
            labels[(IEEE, "images/" + row["filename"])] = NOTEBOOK_MAPPING[f]
    actmed = pd.read_csv(real / "Actualmed-COVID-chestxray-dataset" / "metadata.csv")
    for _, row in actmed.iterrows():
        if not str(row["finding"]) == "nan":
            f = row["finding"].split(",")[0]
            if f in NOTEBOOK_MAPPING:
                labels[("Actualmed-COVID-chestxray-dataset", "images/" + row["imagename"])] = NOTEBOOK_MAPPING[f]
    return labels


def test_real_corpus_labels_are_covidnet_labels(real_corpus, tmp_path):
    sources = [real_corpus / IEEE, real_corpus / "Actualmed-COVID-chestxray-dataset"]
    build(sources, tmp_path / "s", BuildOptions(hash_cache=tmp_path / "c.npz"))
    ours = {key: x.label for key, (_, x) in where(tmp_path / "s").items()}
    expected = notebook_labels(real_corpus)
    assert ours == expected  # same images, same label each
    assert sorted(set(expected.values())) == ["COVID-19", "pneumonia"]  # no normals outside RSNA
    meta = json.loads((tmp_path / "s" / "split.json").read_text())
    assert meta["label_policy"] == "covidnet"


def test_real_rsna_labels_are_covidnet_labels(real_corpus):
    info = pd.read_csv(real_corpus / "rsna" / "stage_2_detailed_class_info.csv")
    boxes = pd.read_csv(real_corpus / "rsna" / "stage_2_train_labels.csv")
    expected = {}
    for _, row in info.iterrows():  # normals first, then Target 1; a patient is taken once
        if row["class"] == "Normal":
            expected.setdefault(row["patientId"], "normal")
    for _, row in boxes.iterrows():
        if int(row["Target"]) == 1:
            expected.setdefault(row["patientId"], "pneumonia")
    scan = scan_source(real_corpus / "rsna")
    assert {e.patient: e.label for e in scan.entries} == expected
    assert len(expected) == 8818 + 6000  # normal and pneumonia patients (no patient is both)
