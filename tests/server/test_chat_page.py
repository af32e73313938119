"""The built-in chat page in headless Chromium (Debian's chromium-headless-shell), driven over the DevTools protocol
through a pipe: type a message, see the reply stream in, stop a long reply; a screenshot is kept as a test artifact
(build/test-artifacts/chat_page.png)."""
import base64
import json
import os
import shutil
import subprocess
import time

import pytest

BROWSERS = ["chromium-headless-shell", "chromium", "chromium-browser"]


class Browser:
    """Chromium with --remote-debugging-pipe: commands go to its fd 3, replies and events come from its fd 4,
    each a JSON message ending with a NUL byte."""

    def __init__(self, binary, profile):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def wire_pipes():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_pipes, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)
        raise TimeoutError(method)

    def read_message(self, deadline):
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("no message from the browser")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


class Page:
    def __init__(self, browser, url):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1000, "height": 720, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def eval(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(expression):
                return
            time.sleep(0.02)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def type_and_send(self, text):
        self.eval("document.getElementById('input').focus()")
        self.send("Input.insertText", {"text": text})
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                 "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13})


LAST_REPLY = "[...document.querySelectorAll('.msg.assistant')].pop()"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if binary is None:
        pytest.fail("no headless Chromium found (" + ", ".join(BROWSERS) + "): scripts/setup.sh --test installs "
                    "Debian's chromium-headless-shell")
    b = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_chat_page_streams_a_reply_and_stops_on_request(server, browser, artifacts):
    page = Page(browser, server.url + "/")
    page.wait_for("document.getElementById('model').textContent === 'SmolLM2-135M-Instruct.Q4_1'")
    page.eval("document.getElementById('temperature').value = '0'; document.getElementById('max-tokens').value = '40'")
    page.type_and_send("Write a short poem about the sea.")
    page.wait_for(f"{LAST_REPLY}?.dataset.state === 'streaming'")
    # The reply grows while it streams: record the lengths seen until it is done.
    lengths = []
    deadline = time.monotonic() + 120
    while page.eval(f"{LAST_REPLY}.dataset.state") != "done":
        lengths.append(page.eval(f"{LAST_REPLY}.querySelector('.text').textContent.length"))
        assert time.monotonic() < deadline, "the reply did not finish"
        time.sleep(0.01)
    reply = page.eval(f"{LAST_REPLY}.querySelector('.text').textContent")
    assert reply.strip(), "empty reply"
    partial = {n for n in lengths if 0 < n < len(reply)}
    assert len(partial) >= 2, f"the reply did not stream in (lengths seen: {sorted(set(lengths))})"
    assert not page.eval(f"{LAST_REPLY}.classList.contains('error')")
    assert page.eval("document.querySelector('.msg.user .text').textContent") == "Write a short poem about the sea."
    shot = page.send("Page.captureScreenshot", {"format": "png"})["data"]
    (artifacts / "chat_page.png").write_bytes(base64.b64decode(shot))

    # A long reply, stopped after its first words: the page says so and the server frees the request.
    cancelled_before = server.metrics()['clusterfusion_requests_finished_total{reason="cancelled"}']
    page.eval("document.getElementById('max-tokens').value = '400'")
    page.type_and_send("Tell me a very long story about a dragon.")
    page.wait_for(f"{LAST_REPLY}.querySelector('.text').textContent.length > 10")
    page.eval("document.getElementById('stop').click()")
    page.wait_for(f"{LAST_REPLY}.dataset.state === 'done'")
    assert page.eval(f"{LAST_REPLY}.querySelector('.note').textContent") == "(stopped)"
    after = server.wait_idle()
    assert after['clusterfusion_requests_finished_total{reason="cancelled"}'] == cancelled_before + 1
    assert after["clusterfusion_kv_pages_in_use"] == 0
    assert page.eval("document.getElementById('send').disabled") is False
