"""A full queue answers 503 and recovers; SIGTERM / SIGINT shut down gracefully: requests in flight finish or end
with an error event, new ones are refused, the process exits 0."""
import concurrent.futures
import json
import signal
import time
import urllib.request

CHAT = "/v1/chat/completions"


def test_full_queue_gets_503_then_recovers(start_server):
    s = start_server("--max-batch", "1", "--queue", "1")
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: s.request("POST", CHAT, body), range(4)))
    codes = sorted(status for status, _, _ in answers)
    assert codes.count(200) >= 2 and 503 in codes, codes  # one running + one queued fit; the rest are refused
    for status, headers, raw in answers:
        if status == 503:
            e = json.loads(raw)["error"]
            assert e["code"] == "server_busy" and e["type"] == "server_error"
            assert headers["Retry-After"] == "1"
    assert s.request("POST", CHAT, body)[0] == 200
    assert s.wait_idle()["clusterfusion_kv_pages_in_use"] == 0


def open_stream(server, max_tokens):
    req = urllib.request.Request(server.url + CHAT, method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"messages": [{"role": "user", "content": "Write a long story."}],
                                                  "max_tokens": max_tokens, "stream": True}).encode())
    response = urllib.request.urlopen(req, timeout=60)
    assert response.readline().startswith(b"data: ")  # the stream has started
    return response


def test_sigterm_lets_requests_finish_within_the_grace_period(start_server):
    s = start_server("--shutdown-grace", "30")
    stream = open_stream(s, 12)
    s.proc.send_signal(signal.SIGTERM)
    rest = stream.read().decode()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    assert '"finish_reason":"length"' in rest
    assert s.proc.wait(30) == 0


def test_grace_period_over_ends_streams_with_an_error_event(start_server):
    s = start_server("--shutdown-grace", "1")
    stream = open_stream(s, 900)
    start = time.monotonic()
    s.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    status, _, raw = s.request("POST", CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 503 and b"shutting down" in raw  # new requests are refused while draining
    assert s.request("GET", "/health")[0] == 503
    rest = stream.read().decode()
    events = [line[6:] for line in rest.splitlines() if line.startswith("data: ")]
    assert "shutting down" in json.loads(events[-1])["error"]["message"], events[-1]
    assert s.proc.wait(30) == 0
    assert time.monotonic() - start < 15


def test_second_signal_stops_at_once(start_server):
    s = start_server("--shutdown-grace", "600")
    stream = open_stream(s, 900)
    s.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(15) == 0
    assert "shutting down" in stream.read().decode()
