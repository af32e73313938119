"""Starts `clusterfusion serve` on the default model for the server tests (loopback, a free port each time)."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_addoption(parser):
    parser.addoption("--cli", default=str(ROOT / "build" / "default" / "clusterfusion"),
                     help="the clusterfusion binary to test")
    parser.addoption("--artifacts", default=str(ROOT / "build" / "test-artifacts"),
                     help="folder for test artifacts (the chat page screenshot)")


@pytest.fixture(scope="session")
def cli(request):
    path = Path(request.config.getoption("--cli"))
    if not path.is_file():
        pytest.fail(f"{path} does not exist: build it first (cmake --build --preset default)")
    return path


@pytest.fixture(scope="session")
def artifacts(request):
    path = Path(request.config.getoption("--artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class Server:
    """One `clusterfusion serve` process; its stderr goes to a log file shown when a test fails."""

    def __init__(self, cli, tmp_path, *args):
        self.log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen([str(cli), "serve", "--port", "0", "--ctx", "1024", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        self.port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", text)
            if found:
                self.port = int(found.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"clusterfusion serve exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError("clusterfusion serve did not start within 60 s:\n" + self.log_path.read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, body bytes) of one plain HTTP request; errors are returned, not raised."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def metrics(self, headers=None):
        status, _, body = self.request("GET", "/metrics", headers=headers)
        assert status == 200, body
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def wait_idle(self, timeout=30, headers=None):
        """Metrics once no request is running or queued (the engine frees sequences between steps)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics(headers)
            if m["clusterfusion_requests_running"] == 0 and m["clusterfusion_requests_queued"] == 0:
                return m
            assert time.monotonic() < deadline, f"server still busy after {timeout} s: {m}"
            time.sleep(0.05)

    def alive(self):
        return self.proc.poll() is None and self.request("GET", "/health")[0] == 200

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(cli, tmp_path_factory):
    """A server shared by a test module: batch 8, a queue long enough for the load test."""
    s = Server(cli, tmp_path_factory.mktemp("serve"), "--max-batch", "8", "--queue", "64")
    yield s
    code = s.stop()
    assert code == 0, f"serve exited with {code}:\n{s.log_path.read_text()}"


@pytest.fixture
def start_server(cli, tmp_path):
    """Starts extra servers with their own options; each is stopped (SIGKILL if need be) after the test."""
    started = []

    def start(*args):
        s = Server(cli, tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL)
