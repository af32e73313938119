"""32 concurrent clients, streaming and not, some leaving mid-request: every request completes or fails cleanly, the
engine batches them, and no sequence or KV page is left behind (checked through /metrics)."""
import concurrent.futures
import threading

import openai

CLIENTS = 32
ROUNDS = 3
PROMPTS = ["Count to three.", "Name a color.", "Say hello.", "What is 2+2?"]


def one_client(url, index, results, lock):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
    for round_ in range(ROUNDS):
        kind = ("stream", "whole", "leave-stream", "leave-whole")[(index + round_) % 4]
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": PROMPTS[(index + round_) % len(PROMPTS)]}]
        outcome = None
        if kind == "stream":
            chunks = list(client.chat.completions.create(model="m", messages=messages, max_tokens=10, stream=True,
                                                         temperature=0.7, seed=index))
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            outcome = ("done", finish[-1]) if finish else ("no finish reason", None)
        elif kind == "whole":
            r = client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0.7, seed=index)
            outcome = ("done", r.choices[0].finish_reason)
        elif kind == "leave-stream":
            stream = client.chat.completions.create(model="m", messages=messages, max_tokens=200, stream=True,
                                                    temperature=0.7, seed=index)
            got = 0
            for c in stream:
                got += bool(c.choices and c.choices[0].delta.content)
                if got == 2:
                    break
            stream.close()  # the connection goes away mid-stream
            outcome = ("left", None)
        else:
            impatient = client.with_options(timeout=0.5)
            try:
                impatient.chat.completions.create(model="m", messages=messages, max_tokens=200)
                outcome = ("done", "finished before the timeout")
            except openai.APITimeoutError:
                outcome = ("left", None)
        with lock:
            results.append((kind, outcome))


def test_32_clients_with_disconnects_leak_nothing(server):
    before = server.wait_idle()
    results, lock = [], threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(one_client, server.url, i, results, lock) for i in range(CLIENTS)]
        for f in futures:
            f.result()  # any unexpected exception (an HTTP error, a broken stream) fails the test here
    assert len(results) == CLIENTS * ROUNDS
    for kind, (status, finish) in results:
        assert status in ("done", "left"), (kind, status)
        if kind in ("stream", "whole"):
            assert status == "done" and finish in ("stop", "length"), (kind, finish)
    assert server.alive()

    after = server.wait_idle()
    assert after["clusterfusion_kv_pages_in_use"] == 0
    finished = sum(after[f'clusterfusion_requests_finished_total{{reason="{r}"}}'] -
                   before[f'clusterfusion_requests_finished_total{{reason="{r}"}}']
                   for r in ("stop", "length", "cancelled", "error"))
    # Every request the server received has exactly one outcome. (An impatient client may give up before its request
    # is even sent, so the count comes from the server's responses, not from the clients.)
    answered = sum(v - before.get(k, 0) for k, v in after.items()
                   if k.startswith('clusterfusion_http_responses_total{endpoint="/v1/chat/completions"'))
    assert finished == answered, f"{answered} requests answered but {finished} outcomes"
    assert finished >= CLIENTS * ROUNDS - sum(1 for kind, _ in results if kind == "leave-whole")
    cancelled = (after['clusterfusion_requests_finished_total{reason="cancelled"}'] -
                 before['clusterfusion_requests_finished_total{reason="cancelled"}'])
    left_streams = sum(1 for kind, _ in results if kind == "leave-stream")
    assert cancelled >= left_streams, "a client that left mid-stream was not cancelled"
    assert after['clusterfusion_requests_finished_total{reason="error"}'] == \
        before['clusterfusion_requests_finished_total{reason="error"}']
    steps = after["clusterfusion_decode_steps_total"] - before["clusterfusion_decode_steps_total"]
    rows = after["clusterfusion_decode_rows_total"] - before["clusterfusion_decode_rows_total"]
    assert rows / steps > 2, f"requests were not batched: {rows / steps:.2f} sequences per decode step"
    assert not any(k.startswith("clusterfusion_http_responses_total") and 'code="5' in k for k in after), after
