"""Bad requests get the right 4xx with an OpenAI error object, and the server keeps serving."""
import http.client
import json

import pytest

CHAT = "/v1/chat/completions"
GOOD = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def error_of(status, body):
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    e = doc["error"]
    assert isinstance(e["message"], str) and e["message"], doc
    assert {"message", "type", "param", "code"} <= set(e), doc
    return e


@pytest.fixture(autouse=True)
def still_serving(server):
    yield
    status, _, body = server.request("POST", CHAT, GOOD)
    assert status == 200, body
    assert server.alive()


@pytest.mark.parametrize("body, param, words", [
    (b'{"messages": [', None, "not valid JSON"),
    (b'[1, 2]', None, "JSON object"),
    (b'{"messages": [{"role": "user", "content": "a"}]} trailing', None, "not valid JSON"),
    (b'{}', "messages", "required"),
    (b'{"messages": []}', "messages", "at least one"),
    (b'{"messages": "hello"}', "messages", "must be an array"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role", "unknown role"),
    (b'{"messages": [{"role": "user"}]}', "messages[0].content", "required"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content", "string"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
     "messages[0].content[0].type", "not supported"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens", "integer"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens", "between"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}', "max_tokens", "integer"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 3}', "temperature", "between"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature", "number"),
    (b'{"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}', "top_p", "between"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream", "true or false"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stop": [1]}', "stop", "strings"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}', "stop", "at most"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n", "must be 1"),
    (b'{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 5}', "presence_penalty", "between"),
    (b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}', "tools", "not supported"),
    (b'{"messages": [{"role": "user", "content": "x"}], "logprobs": true}', "logprobs", "not supported"),
    (b'{"messages": [{"role": "user", "content": "x"}], "seed": "abc"}', "seed", "integer"),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": 7}', "model", "string"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}',
     "stream_options", "only allowed"),
])
def test_malformed_requests_get_400_naming_the_field(server, body, param, words):
    status, headers, raw = server.request("POST", CHAT, body)
    assert status == 400, raw
    assert headers["Content-Type"].startswith("application/json")
    e = error_of(status, raw)
    assert e["type"] == "invalid_request_error"
    assert e["param"] == param
    assert words in e["message"], e


def test_invalid_utf8_is_400(server):
    body = b'{"messages": [{"role": "user", "content": "caf\xc3\x28 \xff"}]}'
    status, _, raw = server.request("POST", CHAT, body)
    assert status == 400
    assert "UTF-8" in error_of(status, raw)["message"]


def test_deeply_nested_json_is_400(server):
    status, _, raw = server.request("POST", CHAT, b"[" * 10000 + b"]" * 10000)
    assert status == 400
    error_of(status, raw)


def test_body_over_the_cap_is_413(server):
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (5 << 20)}]}).encode()
    status, _, raw = server.request("POST", CHAT, huge)
    assert status == 413
    assert "larger than" in error_of(status, raw)["message"]


def test_max_tokens_past_the_context_is_400(server):
    status, _, raw = server.request("POST", CHAT, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000})
    assert status == 400
    e = error_of(status, raw)
    assert e["code"] == "context_length_exceeded" and e["param"] == "max_tokens"
    long_prompt = "word " * 3000
    status, _, raw = server.request("POST", CHAT, {"messages": [{"role": "user", "content": long_prompt}]})
    assert status == 400
    assert error_of(status, raw)["code"] == "context_length_exceeded"


def test_completions_checks_its_prompt(server):
    for body, words in [({"prompt": [[1, 2], [3]]}, "one prompt"), ({"prompt": [-1]}, "token ids"),
                        ({"prompt": [10 ** 9]}, "outside the vocabulary"), ({"prompt": 5}, "must be a string"),
                        ({}, "required"), ({"prompt": "x", "echo": True}, "echo")]:
        status, _, raw = server.request("POST", "/v1/completions", body)
        assert status == 400, (body, raw)
        assert words in error_of(status, raw)["message"], (body, raw)


def test_wrong_content_type_method_and_path(server):
    status, _, raw = server.request("POST", CHAT, json.dumps(GOOD).encode(), headers={"Content-Type": "text/plain"})
    assert status == 415
    error_of(status, raw)
    status, headers, raw = server.request("GET", CHAT)
    assert status == 405 and headers["Allow"] == "POST"
    status, _, raw = server.request("GET", "/v1/nothing-here")
    assert status == 404
    assert error_of(status, raw)["type"] == "invalid_request_error"
    for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/index.html", "/static/../main.cpp"]:
        status, _, raw = server.request("GET", path)
        assert status == 404, path
        assert b"root:" not in raw


def test_broken_http_is_answered_and_the_server_lives_on(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.connect()
    conn.sock.sendall(b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.sock.recv(100).startswith(b"HTTP/1.1 4")
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.connect()
    conn.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"mess")
    conn.close()  # a client that leaves in the middle of its body


def test_api_key(start_server):
    s = start_server("--api-key", "s3cret-key")
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-ke"},
                    {"Authorization": "Bearer s3cret-keyy"}, {"Authorization": "s3cret-key"}]:
        status, h, raw = s.request("POST", CHAT, GOOD, headers=headers)
        assert status == 401, headers
        e = error_of(status, raw)
        assert e["type"] == "authentication_error" and e["code"] == "invalid_api_key"
        assert h["WWW-Authenticate"] == "Bearer"
        assert s.request("GET", "/v1/models", headers=headers)[0] == 401
        assert s.request("GET", "/metrics", headers=headers)[0] == 401
    good = {"Authorization": "Bearer s3cret-key"}
    assert s.request("POST", CHAT, GOOD, headers=good)[0] == 200
    assert s.request("GET", "/v1/models", headers=good)[0] == 200
    assert s.request("GET", "/health")[0] == 200  # health and the page need no key
    assert s.request("GET", "/")[0] == 200
