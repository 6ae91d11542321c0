"""`hpml predict` on hostile files (issue 24): each is reported by name, the rest are classified,
and the exit status tells a job script whether every file, some, or none were classified."""

import csv
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from conftest import DEMO


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with 1000 bytes of image data (IEND present)."""

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.timeout(300)  # a FIFO opened for reading without a writer would wait forever
def test_predict_names_each_hostile_file_classifies_the_rest_and_exits_3(tmp_path, capsys, monkeypatch):
    from hpml.core.config import load_config, save_config
    from hpml.core.errors import UsageError
    from hpml.models.build import build_model
    from hpml.serve.predict import predict

    cfg = load_config(DEMO)  # an untrained run: enough for the exit rules
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    build_model(cfg.model, cfg.data.image_size).save_weights(str(run / "checkpoints" / "best.h5"))

    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(good):
        path.write_bytes(cv2.imencode(".png", np.add.outer(np.arange(48), np.arange(64) * (i + 1)).astype(np.uint8))[1])
    huge, pipe = tmp_path / "huge.png", tmp_path / "pipe.png"
    huge.write_bytes(png_claiming(50000, 50000))
    os.mkfifo(pipe)
    bad = {
        huge: "PNG header claims 50000 x 50000 pixels (width x height) = 2,500,000,000, over the limit of "
        "50,000,000 pixels (HPML_MAX_PIXELS)",
        pipe: "not a regular file: a FIFO (named pipe)",
    }

    assert predict(run, [good[0], huge, pipe, good[1]], csv_path=tmp_path / "p.csv") == 3
    out, err = capsys.readouterr()
    for path, reason in bad.items():
        assert f"{path}  UNREADABLE: {reason}" in out
    assert "2 predicted, 2 unreadable" in out and "2 of 4 files could not be classified" in err
    with open(tmp_path / "p.csv") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    assert {path: rows[str(path)]["error"] for path in bad} == bad
    assert all(rows[str(p)]["predicted"] in ("normal", "pneumonia", "COVID-19") for p in good)

    assert predict(run, good) == 0  # every file classified
    assert predict(run, list(bad)) == 1  # none
    assert "no file could be classified (2 found)" in capsys.readouterr().err
    monkeypatch.setenv("HPML_MAX_PIXELS", "lots")  # a bad setting fails the run (exit 2), not each file
    with pytest.raises(UsageError, match="HPML_MAX_PIXELS='lots'"):
        predict(run, good)
