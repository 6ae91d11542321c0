"""hpml.api, hpml from a notebook (issue 26): importing it costs no TensorFlow, `predict` returns
per-file probabilities and prints nothing, `evaluate` returns what hpml.evaluation.evaluate does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO, REPO

CHECK_IMPORT = """
import sys
from hpml import api
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "horovod", "mpi4py"))
print(heavy)
print(sorted(api.__all__))
"""


def test_importing_the_api_imports_no_tensorflow():
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORT], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    heavy, names = proc.stdout.splitlines()
    assert heavy == "[]"
    assert names == "['CLASSES', 'Config', 'evaluate', 'load_config', 'predict']"


def test_load_config_is_the_cli_config():
    from hpml import api

    cfg = api.load_config(DEMO, ["train.lr=1e-4"])
    assert isinstance(cfg, api.Config) and cfg.train.lr == 1e-4 and cfg.data.image_size == 64


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """An untrained run of the demo model (as tests/pipeline/test_predict_limits.py makes one)."""
    from hpml.core.config import load_config, save_config
    from hpml.models.build import build_model

    cfg = load_config(DEMO)
    run = tmp_path_factory.mktemp("api") / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    build_model(cfg.model, cfg.data.image_size).save_weights(str(run / "checkpoints" / "best.h5"))
    return run


def test_predict_returns_probabilities_and_prints_nothing(tiny_run, tmp_path, capfd):
    from hpml import api

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        gray = np.add.outer(np.arange(48), np.arange(64) * (i + 1)).astype(np.uint8)
        (images / f"{i}.png").write_bytes(cv2.imencode(".png", gray)[1].tobytes())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    capfd.readouterr()

    rows = api.predict([images, str(broken)], run_dir=tiny_run)

    assert capfd.readouterr().out == ""  # nothing printed, not even by TensorFlow's progress bar
    assert [r["file"] for r in rows] == [str(images / "0.png"), str(images / "1.png"), str(broken)]
    for row in rows[:2]:
        probs = row["probabilities"]
        assert list(probs) == list(api.CLASSES) and row["error"] is None
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == max(probs, key=probs.get)
    assert rows[2]["probabilities"] is None and rows[2]["predicted"] is None and rows[2]["error"]
    assert api.predict(images / "0.png", run_dir=tiny_run)[0]["probabilities"] == rows[0]["probabilities"]
    with pytest.raises(ValueError, match="needs run_dir"):
        api.predict([broken])


def test_evaluate_is_the_commands_evaluate(monkeypatch):
    from hpml import api
    from hpml.evaluation import evaluate

    calls = []
    monkeypatch.setattr(evaluate, "evaluate", lambda *args: calls.append(args) or {"accuracy": 0.5})
    assert api.evaluate("runs/demo", split="val") == {"accuracy": 0.5}
    assert calls == [(Path("runs/demo"), "val", None, None, ())]
