"""`hpml weights fetch` and `model.weights: imagenet` against a real HTTP server on 127.0.0.1.

The server serves generated files (with Range support, or ignoring it, or cutting a response
short once); the tests pass `fetch` a table with those files' real hashes. The CLI runs as a
subprocess against the built-in table: MobileNetV2 (no published hash) fetched end to end, a
ResNet50V2 whose served bytes cannot match Keras' md5 refused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import hpml

from hpml.cli.main import build_parser
from hpml.core.errors import UsageError
from hpml.models import weights_cache as wc
from hpml.models.weights_cache import WeightsError, WeightsFile, fetch, resolve

GOOD = os.urandom(300_000)
HDF5 = wc.HDF5_SIGNATURE + os.urandom(50_000)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state = self.server.state
        state["requests"].append((self.path, self.headers.get("Range")))
        time.sleep(state["delay"])
        body = state["files"].get(self.path)
        if body is None:
            return self.send_error(404)
        start, wanted = 0, self.headers.get("Range")
        if wanted and not state["ignore_range"]:
            start = int(wanted.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                return self.send_error(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = state["cut"].pop(self.path, None)  # close the connection after `cut` bytes, once
        self.wfile.write(body[start:][:cut])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = {"files": {}, "requests": [], "cut": {}, "ignore_range": False, "delay": 0.0}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(wc, "RETRY_DELAY_S", 0.0)


def serve(server, path: str, body: bytes, hash_of: bytes | None = None, algo: str = "md5") -> dict:
    """Serve `body` at /path; return a fetch table for backbone "net" with the hash of `hash_of`."""
    server.state["files"]["/" + path] = body
    return {"net": WeightsFile(path, hashlib.new(algo, body if hash_of is None else hash_of).hexdigest())}


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_a_good_file_is_verified_installed_and_not_downloaded_twice(server, tmp_path, algo):
    table = serve(server, "apps/net_notop.h5", GOOD, algo=algo)
    path = fetch("net", tmp_path, server.url, table)
    assert path == tmp_path / "net_notop.h5" and path.read_bytes() == GOOD
    assert not (tmp_path / "net_notop.h5.part").exists()
    assert fetch("net", tmp_path, server.url, table) == path
    assert server.state["requests"] == [("/apps/net_notop.h5", None)]


def test_a_corrupt_file_is_refused_and_removed(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD, hash_of=b"other bytes")
    with pytest.raises(WeightsError) as err:
        fetch("net", tmp_path, server.url, table)
    message = str(err.value)
    assert "net_notop.h5" in message and table["net"].hash in message
    assert hashlib.md5(GOOD).hexdigest() in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_notop.h5.lock"]  # no .part, no final file


def test_a_present_file_that_fails_its_hash_is_downloaded_again(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD)
    (tmp_path / "net_notop.h5").write_bytes(b"stale")
    assert fetch("net", tmp_path, server.url, table).read_bytes() == GOOD
    assert len(server.state["requests"]) == 1


def test_an_interrupted_download_resumes_with_range(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD)
    server.state["cut"]["/net_notop.h5"] = 100_000
    assert fetch("net", tmp_path, server.url, table).read_bytes() == GOOD
    assert server.state["requests"] == [("/net_notop.h5", None), ("/net_notop.h5", "bytes=100000-")]


def test_a_part_left_by_an_earlier_fetch_is_resumed(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD)
    (tmp_path / "net_notop.h5.part").write_bytes(GOOD[:123_456])
    assert fetch("net", tmp_path, server.url, table).read_bytes() == GOOD
    assert server.state["requests"] == [("/net_notop.h5", "bytes=123456-")]


def test_a_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD)
    server.state["ignore_range"] = True
    server.state["cut"]["/net_notop.h5"] = 100_000
    (tmp_path / "net_notop.h5.part").write_bytes(b"x" * 5_000)  # appended to, the hash would fail
    assert fetch("net", tmp_path, server.url, table).read_bytes() == GOOD
    assert [r[1] for r in server.state["requests"]] == ["bytes=5000-", "bytes=100000-"]


def test_concurrent_fetches_download_once(server, tmp_path):
    table = serve(server, "net_notop.h5", GOOD)
    server.state["delay"] = 0.3
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch("net", tmp_path, server.url, table))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "net_notop.h5"] * 3 and results[0].read_bytes() == GOOD
    assert len(server.state["requests"]) == 1


def test_resolve_names_the_cached_file_and_never_downloads(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HPML_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HPML_WEIGHTS_URL", server.url)
    assert resolve(None, "resnet50v2") is None
    assert resolve("/some/local.h5", "resnet50v2") == "/some/local.h5"
    with pytest.raises(UsageError) as err:
        resolve("imagenet", "resnet50v2")
    assert "hpml weights fetch resnet50v2" in str(err.value) and "HPML_WEIGHTS_DIR" in str(err.value)
    assert str(tmp_path / wc.TABLE["resnet50v2"].name) in str(err.value)
    with pytest.raises(UsageError, match="torchvision"):
        resolve("imagenet", "resnext50")
    (tmp_path / wc.TABLE["resnet50v2"].name).write_bytes(b"fetched")
    assert resolve("imagenet", "resnet50v2") == str(tmp_path / wc.TABLE["resnet50v2"].name)
    assert server.state["requests"] == []


PROBE = """
import sys, urllib.request
from hpml.core.errors import UsageError
from hpml.models.weights_cache import resolve
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
    print("server reachable")
except OSError:
    pass
try:
    resolve("imagenet", "resnet50v2")
except UsageError as exc:
    print(exc)
    sys.exit(3)
"""


def test_resolve_on_a_node_without_network_fails_at_once_without_a_request(server, tmp_path):
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n (a network namespace) is not available")
    env = {**os.environ, "HPML_WEIGHTS_DIR": str(tmp_path / "empty"), "HPML_WEIGHTS_URL": server.url}
    began = time.monotonic()
    cmd = ["unshare", "-n", sys.executable, "-c", PROBE, server.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "server reachable" not in proc.stdout  # the namespace really is cut off
    assert "hpml weights fetch resnet50v2" in proc.stdout
    assert time.monotonic() - began < 30 and server.state["requests"] == []


def test_cli_fetches_a_file_keras_publishes_no_hash_for_as_unverified(server, tmp_path):
    serve(server, wc.TABLE["mobilenetv2"].path, HDF5)
    proc = hpml("weights", "fetch", "mobilenetv2", "--cache", tmp_path, "--base-url", server.url)
    path = tmp_path / wc.TABLE["mobilenetv2"].name
    assert path.read_bytes() == HDF5
    assert f"{path}  {len(HDF5)} bytes  sha256 {hashlib.sha256(HDF5).hexdigest()} UNVERIFIED" in proc.stdout


def test_cli_refuses_a_download_that_fails_keras_hash(server, tmp_path):
    serve(server, wc.TABLE["resnet50v2"].path, GOOD)
    env = {"HPML_WEIGHTS_URL": server.url, "HPML_WEIGHTS_DIR": str(tmp_path)}
    proc = hpml("weights", "fetch", "resnet50v2", check=False, env=env)
    assert proc.returncode == 2 and "fac2f116257151a9d068a22e544a4917" in proc.stderr, proc.stderr
    assert not (tmp_path / wc.TABLE["resnet50v2"].name).exists()


@pytest.mark.parametrize(("backbone", "says"), [("resnext50", "torchvision"), ("vgg16", "unknown backbone")])
def test_cli_names_backbones_without_imagenet_weights(server, tmp_path, backbone, says):
    proc = hpml("weights", "fetch", "mobilenetv2", backbone, "--cache", tmp_path, "--base-url", server.url, check=False)
    assert proc.returncode == 2 and says in proc.stderr and backbone in proc.stderr, proc.stderr
    assert server.state["requests"] == []  # every name is checked before any download


def test_cli_prints_a_verified_file(server, tmp_path, monkeypatch, capsys):
    table = serve(server, "net_notop.h5", GOOD)
    monkeypatch.setattr(wc, "TABLE", {"resnet50v2": table["net"]})
    args = build_parser().parse_args(
        ["weights", "fetch", "resnet50v2", "--cache", str(tmp_path), "--base-url", server.url]
    )
    assert args.func(args) == 0  # in process (the table patched), without the CLI's logging set-up
    line = f"resnet50v2: {tmp_path / 'net_notop.h5'}  {len(GOOD)} bytes  md5 {table['net'].hash} verified"
    assert line in capsys.readouterr().out
