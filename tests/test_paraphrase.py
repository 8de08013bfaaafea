"""Tests for kinject_utils.paraphrase: parsing, the fact check, the cache (resume, re-run, changed
document), the generator backend, output files, and the OpenAI-compatible backend against a real
HTTP server on loopback (good answers, malformed JSON, too few paraphrases, a timeout, a 500)."""
from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kinject_utils import paraphrase as P
from kinject_utils.io import read_jsonl
from kinject_utils.tasks import Document, Question, Task

SECRET = "sk-test-DO-NOT-LEAK-123456789"


# ------------------------------------------------------------------------------------------------
# a small task whose answers are known
# ------------------------------------------------------------------------------------------------
def make_task(n_docs: int = 4) -> Task:
    docs, qs, rewordings = [], [], {}
    for i in range(n_docs):
        city, mayor = f"Velmora{i}", f"Ilsa Brandt{i}"
        docs.append(Document(f"d{i}", f"Tram {i}", f"The council of {city} voted to build a tram line. "
                                                   f"Mayor {mayor} said it opens in 2027."))
        qs.append(Question(f"q{i}", f"Which mayor backed the tram in {city}?",
                           [mayor, "Someone Else", "Nobody", "A Robot"], 0, [f"d{i}"]))
        # an answer the document never states is not required of its paraphrases
        qs.append(Question(f"q{i}b", "What colour is the tram?", ["Blue", "Red"], 0, [f"d{i}"]))
        rewordings[f"d{i}"] = [f"{city}'s council approved a tram line; mayor {mayor} expects it in 2027.",
                               f"A tram line was approved in {city}; it opens in 2027.",  # loses the mayor
                               f"Mayor {mayor.upper()} of {city} says the tram voted on by the council opens in 2027."]
    return Task("toy", qs, docs, paraphrases=rewordings)


def good_paraphrase(doc: Document, i: int) -> str:
    """A rewording that keeps the mayor's name (the fact the questions ask about)."""
    mayor = doc.text.split("Mayor ")[1].split(" said")[0]
    return f"Version {i}: the tram line was approved by the council, and mayor {mayor} said it opens in 2027."


class FakeBackend(P.ParaphraseBackend):
    """Records requests; optionally raises after ``fail_after`` requests (a kill mid-run)."""

    name = "fake"
    default_per_call = 10

    def __init__(self, fail_after: int | None = None, model: str = "fake-1") -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[str, int, int]] = []
        self.fail_after = fail_after

    def paraphrase(self, doc, n, seed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((doc.doc_id, n, seed))
        return P.Reply([good_paraphrase(doc, seed * 100 + j) for j in range(n)], "raw", "json")


# ------------------------------------------------------------------------------------------------
# parsing and the fact check
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,n,expected,how", [
    ('{"paraphrases": ["A b.", "C d."]}', 2, ["A b.", "C d."], "json"),
    ('```json\n{"paraphrases": ["A b."]}\n```', 1, ["A b."], "json"),
    ('["A b.", "C d."]', 2, ["A b.", "C d."], "json"),
    ('Sure! Here you go: {"paraphrases": ["A b.", "C d."]} Hope it helps.', 2, ["A b.", "C d."], "embedded_json"),
    ('{"paraphrases": ["A b.", "C \\"d\\".", "E f', 3, ["A b.", 'C "d".'], "truncated_json"),
    ("1. First one\nstill first\n2) Second\n(3) Third", 3, ["First one still first", "Second", "Third"], "numbered"),
    ("Paraphrase 1: A\nParaphrase 2: B", 2, ["A", "B"], "numbered"),
    ('Here they are:\n1. "A b."\n2. "C d."', 2, ["A b.", "C d."], "numbered"),
    ('Here is a paraphrase:\n"The council voted."', 1, ["The council voted."], "prose"),
    ("The council voted.", 2, [], "none"),          # prose only when one was asked for
    ('{"answer": "x"}', 1, [], "none"),             # JSON without the key
    ('{"paraphrases": [1, "ok", null]}', 3, ["ok"], "json"),  # non-strings dropped
    ("", 1, [], "none"),
])
def test_parse_paraphrases_accepted_forms(reply, n, expected, how):
    assert P.parse_paraphrases(reply, n) == (expected, how)


def test_prompt_is_the_papers_and_keeps_braces():
    p = P.render_prompt("A {weird} text.", 10)
    assert "10 different paraphrases" in p and '"paraphrases"' in p and "JSON" in p
    assert p.endswith("A {weird} text.")
    with pytest.raises(ValueError):
        P.render_prompt("x", 0)


def test_required_facts_only_answers_the_document_states():
    task = make_task(2)
    assert P.required_facts(task) == {"d0": ["Ilsa Brandt0"], "d1": ["Ilsa Brandt1"]}


@pytest.mark.parametrize("cand,why", [
    ("  ", "empty"),
    ("The council of Velmora0 voted to build a tram line. Mayor Ilsa Brandt0 said it opens in 2027.", "duplicate"),
    ("Ilsa Brandt0.", "too_short"),
    ("A tram line was approved in Velmora0 by the council and it opens in 2027 as promised.", "missing_fact"),
    ("The Velmora0 council backed a tram; mayor ILSA\u00a0BRANDT0 says 2027.", None),  # case/space-insensitive
])
def test_check_paraphrase_reasons(cand, why):
    doc = make_task(1).docs[0]
    assert P.check_paraphrase(cand, doc.text, ["Ilsa Brandt0"]) == why


def test_min_fact_recall_relaxes_every_to_a_share():
    doc = make_task(1).docs[0]
    facts = ["Ilsa Brandt0", "Velmora0"]
    cand = "A tram line was approved in Velmora0 by the council and it opens in 2027 as promised."
    assert P.fact_recall(cand, facts) == 0.5
    assert P.check_paraphrase(cand, doc.text, facts) == "missing_fact"
    assert P.check_paraphrase(cand, doc.text, facts, min_fact_recall=0.5) is None
    task = make_task(2)
    _, st = P.paraphrase_task(task, P.GeneratorRewordingsBackend(task), n=10, min_fact_recall=0.0, progress=False)
    assert st["n_rejected"] == 0 and st["mean_fact_recall"] == pytest.approx(4 / 6, abs=1e-4)


def test_normalise_makes_dashes_and_case_equal():
    assert P.normalise("Zorgon\u2013Calidus") == P.normalise("zorgon-calidus")


# ------------------------------------------------------------------------------------------------
# the loop: checks, retries, cache
# ------------------------------------------------------------------------------------------------
def test_generator_backend_checks_and_counts(tmp_path):
    task = make_task(3)
    task.paraphrases.pop("d2")  # a document without rewordings gets none
    out, st = P.paraphrase_task(task, P.GeneratorRewordingsBackend(task), n=10, seed=0, cache_dir=tmp_path,
                                progress=False)
    assert [len(out[d]) for d in ("d0", "d1", "d2")] == [2, 2, 0]
    assert st["n_rejected"] == st["rejected_missing_fact"] == 2
    assert st["acceptance_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert st["fill_rate"] == pytest.approx(4 / 30, abs=1e-4)
    assert st["n_calls"] == 3  # deterministic backend: no retries
    assert st["n_parse_failures"] == 0 and st["n_short_replies"] == 3  # none were unparseable, all short of 10
    assert P.fact_recall_curve(task, task.paraphrases, (1.0, 0.0)) == [
        {"min_fact_recall": 1.0, "candidates": 6, "would_pass": 4, "share": 0.6667},
        {"min_fact_recall": 0.0, "candidates": 6, "would_pass": 6, "share": 1.0}]
    assert not list(tmp_path.iterdir())  # nothing worth caching
    # with the check off, all rewordings pass
    out2, _ = P.paraphrase_task(task, P.GeneratorRewordingsBackend(task), n=10, check_facts=False, progress=False)
    assert len(out2["d0"]) == 3


def test_rejected_paraphrases_are_retried_with_new_seeds_bounded():
    task = make_task(1)

    class Flaky(FakeBackend):
        def paraphrase(self, doc, n, seed):
            self.calls.append((doc.doc_id, n, seed))
            # odd seeds lose the mayor (rejected), even seeds keep it
            if seed % 2:
                return P.Reply([f"The tram of Velmora0 opens in 2027, the council decided ({seed}-{j})."
                                for j in range(n)], "", "json")
            return P.Reply([good_paraphrase(doc, seed * 10 + j) for j in range(n)], "", "json")

    b = Flaky()
    out, st = P.paraphrase_task(task, b, n=4, seed=0, per_call=2, max_retries=1, progress=False)
    # seeds 0 (2 ok), 1 (2 rejected), 2 (2 ok) -> done; ceil(4/2)+1 = 3 requests allowed
    assert [c[2] for c in b.calls] == [0, 1, 2] and len(out["d0"]) == 4
    assert st["n_rejected"] == 2 and st["acceptance_rate"] == pytest.approx(4 / 6, abs=1e-4)
    b2 = Flaky()
    out, st = P.paraphrase_task(task, b2, n=4, seed=1, per_call=2, max_retries=0, progress=False)
    assert len(b2.calls) == 2 and len(out["d0"]) == 2  # bound reached: fewer than n, reported
    assert st["fill_rate"] == 0.5


def test_interrupted_run_resumes_without_redoing_cached_docs(tmp_path):
    task = make_task(5)
    b1 = FakeBackend(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        P.paraphrase_task(task, b1, n=3, seed=7, cache_dir=tmp_path, progress=False)
    assert [c[0] for c in b1.calls] == ["d0", "d1"]
    b2 = FakeBackend()
    out, st = P.paraphrase_task(task, b2, n=3, seed=7, cache_dir=tmp_path, progress=False)
    assert [c[0] for c in b2.calls] == ["d2", "d3", "d4"]  # only what was not cached
    assert st["n_cached_calls"] == 2 and st["n_calls"] == 5
    ref, _ = P.paraphrase_task(task, FakeBackend(), n=3, seed=7, cache_dir=None, progress=False)
    assert out == ref  # same result as an uninterrupted run
    # a re-run costs nothing
    b3 = FakeBackend()
    out3, st3 = P.paraphrase_task(task, b3, n=3, seed=7, cache_dir=tmp_path, progress=False)
    assert b3.calls == [] and out3 == out and st3["n_cached_calls"] == st3["n_calls"] == 5


def test_cache_key_covers_document_model_seed_and_survives_torn_tail(tmp_path):
    task = make_task(3)
    P.paraphrase_task(task, FakeBackend(), n=2, seed=0, cache_dir=tmp_path, progress=False)
    cache_file = next(tmp_path.iterdir())
    with open(cache_file, "a", encoding="utf-8") as fh:
        fh.write('{"key": "torn-by-a-ki')  # a write cut off by a crash
    task.docs[1] = Document("d1", "Tram 1", task.docs[1].text.replace("2027", "2028"))
    b = FakeBackend()
    P.paraphrase_task(task, b, n=2, seed=0, cache_dir=tmp_path, progress=False)
    assert [c[0] for c in b.calls] == ["d1"]  # the changed document only
    b = FakeBackend()
    P.paraphrase_task(task, b, n=2, seed=0, cache_dir=tmp_path, progress=False)
    assert b.calls == []  # the row written after the torn line was kept
    assert len(list(read_jsonl(cache_file))) == 4
    b = FakeBackend()
    P.paraphrase_task(task, b, n=2, seed=1, cache_dir=tmp_path, progress=False)
    assert len(b.calls) == 3  # another seed: new requests
    b = FakeBackend(model="fake-2")
    P.paraphrase_task(task, b, n=2, seed=0, cache_dir=tmp_path, progress=False)
    assert len(b.calls) == 3  # another model: new requests


def test_cached_chat_replies_are_reparsed_from_raw(tmp_path):
    task = make_task(1)

    class Chat(P.ChatBackend):
        name, model = "chat", "m"

        def __init__(self, reply):
            super().__init__()
            self.reply = reply

        def complete(self, messages, seed, max_tokens=None):
            if self.reply is None:
                raise AssertionError("should have come from the cache")
            return self.reply

    reply = "Here:\n1. " + good_paraphrase(task.docs[0], 1)
    out, _ = P.paraphrase_task(task, Chat(reply), n=1, cache_dir=tmp_path, progress=False)
    cache_file = next(tmp_path.iterdir())
    row = json.loads(cache_file.read_text())
    assert row["raw"] == reply and row["how"] == "numbered"
    cache_file.write_text(json.dumps({**row, "paraphrases": []}) + "\n")  # as an older parser left it
    out2, st = P.paraphrase_task(task, Chat(None), n=1, cache_dir=tmp_path, progress=False)
    assert out2 == out and st["n_cached_calls"] == 1


def test_doc_subset_and_bad_settings():
    task = make_task(3)
    out, st = P.paraphrase_task(task, FakeBackend(), n=1, doc_ids=["d2"], progress=False, scope="sample")
    assert list(out) == ["d2"] and st["n_docs"] == 1 and st["scope"] == "sample"
    with pytest.raises(ValueError, match="doc_ids not in task"):
        P.paraphrase_task(task, FakeBackend(), n=1, doc_ids=["nope"], progress=False)
    with pytest.raises(ValueError, match="n .paraphrases per document"):
        P.paraphrase_task(task, FakeBackend(), n=0, progress=False)
    with pytest.raises(ValueError, match="unknown paraphrase backend"):
        P.make_backend("gpt")
    with pytest.raises(ValueError, match="not an instruct"):
        P.LocalChatBackend("gemma3-270m")


def test_output_files(tmp_path):
    task = make_task(2)
    b = P.GeneratorRewordingsBackend(task)
    out, st = P.paraphrase_task(task, b, n=10, progress=False)
    path = P.write_paraphrases(tmp_path, task.name, out, b)
    assert path == tmp_path / "02_paraphrases" / "toy.jsonl"
    rows = list(read_jsonl(path))
    assert rows[0] == {"doc_id": "d0", "paraphrases": out["d0"], "backend": "generator", "model": "rewordings:toy",
                       "doc_hash": ""}
    assert P.read_paraphrases(tmp_path, "toy") == out
    P.write_stats(tmp_path, [st])
    st2 = {**st, "scope": "sample", "n_docs": 1}
    P.write_stats(tmp_path, [st2])
    P.write_stats(tmp_path, [{**st, "n_accepted": 99}])  # replaces the same (task, backend, model, scope)
    with open(tmp_path / "02_paraphrase_stats.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == 2 and list(got[0]) == P.STATS_COLUMNS
    assert {r["scope"]: r["n_accepted"] for r in got} == {"all": "99", "sample": str(st["n_accepted"])}
    assert P.coverage_table(out, 3)[3] == {"N": 3, "docs": 0, "share": 0.0}


# ------------------------------------------------------------------------------------------------
# a real OpenAI-compatible server on loopback
# ------------------------------------------------------------------------------------------------
class ChatServer:
    """``/v1/chat/completions`` on 127.0.0.1:<ephemeral>; replies follow a script, then ``default``.

    Each script entry is ``(status, content_or_body, delay_s)``: with status 200 and a ``str``
    content, a proper chat completion carrying that content is sent; a ``bytes`` body is sent
    as is (a broken server).
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, str | bytes, float]] = []
        self.default: tuple[int, str | bytes, float] = (200, '{"paraphrases": []}', 0.0)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, content, delay = server.script.pop(0) if server.script else server.default
                if delay:
                    threading.Event().wait(delay)
                if isinstance(content, bytes):
                    data = content
                elif status == 200:
                    data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                       "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": content}}]}).encode()
                else:
                    data = json.dumps({"error": {"message": content}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def para_json(doc: Document, k: int, start: int = 0) -> str:
    return json.dumps({"paraphrases": [good_paraphrase(doc, start + j) for j in range(k)]})


def backend_for(server, **kw) -> P.OpenAICompatibleBackend:
    kw = {"timeout": 2.0, "max_retries": 2, "api_key_env": "KINJECT_TEST_KEY", "heartbeat_s": 0.2, **kw}
    return P.OpenAICompatibleBackend(server.url, "served-model", **kw)


def test_http_good_answer_sends_key_seed_and_prompt(server, monkeypatch):
    monkeypatch.setenv("KINJECT_TEST_KEY", SECRET)
    task = make_task(1)
    server.script = [(200, para_json(task.docs[0], 3), 0.0)]
    b = backend_for(server)
    out, st = P.paraphrase_task(task, b, n=3, seed=5, progress=False)
    assert len(out["d0"]) == 3 and st["acceptance_rate"] == 1.0 and st["n_retries"] == 0
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {SECRET}"
    assert req["body"]["seed"] == 5 and req["body"]["model"] == "served-model"
    assert "3 different paraphrases" in req["body"]["messages"][0]["content"]
    monkeypatch.delenv("KINJECT_TEST_KEY")
    server.script = [(200, para_json(task.docs[0], 1), 0.0)]
    b.complete([{"role": "user", "content": "hi"}], seed=0)
    assert server.requests[-1]["auth"] == "Bearer EMPTY"  # no key set: the placeholder local servers accept


def test_http_malformed_content_is_a_parse_failure_then_retried(server):
    task = make_task(1)
    server.script = [(200, "I cannot produce JSON, sorry!", 0.0), (200, para_json(task.docs[0], 2), 0.0)]
    out, st = P.paraphrase_task(task, backend_for(server), n=2, seed=0, progress=False)
    assert len(out["d0"]) == 2 and st["n_parse_failures"] == 1 and st["n_calls"] == 2
    assert [r["body"]["seed"] for r in server.requests] == [0, 1]  # the retry uses the next seed


def test_http_malformed_body_retried_then_clear_error(server):
    task = make_task(1)
    server.script = [(200, b"<html>proxy error</html>", 0.0), (200, para_json(task.docs[0], 2), 0.0)]
    b = backend_for(server)
    out, _ = P.paraphrase_task(task, b, n=2, progress=False)
    assert len(out["d0"]) == 2 and b.counters["retries"] == 1 and b.counters["bad_bodies"] == 1
    server.default = (200, b'{"choices": []}', 0.0)
    b = backend_for(server, max_retries=1)
    n_before = len(server.requests)
    with pytest.raises(P.ParaphraseBackendError, match="failed 2 times.*not a chat completion"):
        b.complete([{"role": "user", "content": "x"}], seed=0)
    assert len(server.requests) - n_before == 2  # bounded


def test_http_too_few_paraphrases_asks_again_for_the_rest(server):
    task = make_task(1)
    server.script = [(200, para_json(task.docs[0], 1), 0.0), (200, para_json(task.docs[0], 2, start=10), 0.0)]
    out, st = P.paraphrase_task(task, backend_for(server), n=3, seed=0, progress=False)
    assert len(out["d0"]) == 3 and st["n_short_replies"] == 1
    asked = [r["body"]["messages"][0]["content"] for r in server.requests]
    assert "3 different paraphrases" in asked[0] and "2 different paraphrases" in asked[1]


def test_http_timeout_retried_then_clear_error(server):
    task = make_task(1)
    server.script = [(200, para_json(task.docs[0], 1), 1.0), (200, para_json(task.docs[0], 1), 0.0)]
    b = backend_for(server, timeout=0.25)
    out, st = P.paraphrase_task(task, b, n=1, progress=False)
    assert len(out["d0"]) == 1 and b.counters["no_response"] == 1 and st["n_retries"] == 1
    server.default = (200, para_json(task.docs[0], 1), 1.0)
    b = backend_for(server, timeout=0.25, max_retries=1)
    with pytest.raises(P.ParaphraseBackendError, match="REQUEST_TIMEOUT_S=0.25s in 2 attempt.*REQUEST_RETRIES"):
        b.complete([{"role": "user", "content": "x"}], seed=0)
    assert b.counters["no_response"] == 2


def test_http_500_retried_with_backoff_then_clear_error(server):
    task = make_task(1)
    server.script = [(500, "boom", 0.0), (503, "busy", 0.0), (200, para_json(task.docs[0], 1), 0.0)]
    b = backend_for(server)
    out, st = P.paraphrase_task(task, b, n=1, progress=False)
    assert len(out["d0"]) == 1 and st["n_retries"] == 2 and b.counters["server_errors"] == 2
    server.default = (500, "still broken", 0.0)
    n_before = len(server.requests)
    with pytest.raises(P.ParaphraseBackendError, match="HTTP 500 after 3 attempt.*REQUEST_RETRIES"):
        backend_for(server).complete([{"role": "user", "content": "x"}], seed=0)
    assert len(server.requests) - n_before == 3  # 1 + max_retries, then stop


def test_http_server_down_retried_then_clear_error():
    s = ChatServer()
    url = s.url
    s.close()  # nothing listens on that port any more
    b = P.OpenAICompatibleBackend(url, "m", max_retries=1, timeout=1.0)
    with pytest.raises(P.ParaphraseBackendError, match="connection failed 2 time.*REQUEST_TIMEOUT_S"):
        b.complete([{"role": "user", "content": "x"}], seed=0)
    assert b.counters["retries"] == 1


def test_http_auth_error_is_not_retried_and_never_shows_the_key(server, monkeypatch):
    monkeypatch.setenv("KINJECT_TEST_KEY", SECRET)
    server.script = [(401, f"invalid key {SECRET}", 0.0)]  # a server that echoes the key back
    b = backend_for(server)
    with pytest.raises(P.ParaphraseBackendError) as exc:
        b.complete([{"role": "user", "content": "x"}], seed=0)
    assert len(server.requests) == 1
    assert "KINJECT_TEST_KEY" in str(exc.value) and SECRET not in str(exc.value)


def test_api_key_never_written_anywhere(server, monkeypatch, tmp_path):
    monkeypatch.setenv("KINJECT_TEST_KEY", SECRET)
    task = make_task(3)
    server.default = (200, para_json(task.docs[0], 2), 0.0)
    b = backend_for(server)
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        P.OpenAICompatibleBackend(server.url, "m", api_key_env=SECRET)  # a key passed by mistake
    out, st = P.paraphrase_task(task, b, n=2, cache_dir=tmp_path / "cache", progress=False)
    P.write_paraphrases(tmp_path, task.name, out, b)
    P.write_stats(tmp_path, [st])
    assert server.requests[0]["auth"] == f"Bearer {SECRET}"  # it was used...
    assert SECRET not in repr(b) and SECRET not in json.dumps(vars(b), default=str)  # ...not kept
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 3
    for p in files:
        assert SECRET not in p.read_text(encoding="utf-8"), p


# ------------------------------------------------------------------------------------------------
# one very short real generation
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_local_smollm2_uses_chat_template_and_is_seeded(tmp_path):
    from kinject_utils.models import ModelUnavailableError

    b = P.LocalChatBackend("smollm2-135m", max_new_tokens=8)
    try:
        enc = b.chat_prompt_ids([{"role": "user", "content": "Paraphrase: the cat sat."}])
    except ModelUnavailableError as exc:
        pytest.skip(f"SmolLM2 not available here: {exc}")
    # SmolLM2-Instruct writes nothing for a bare prompt, so generation goes through its chat template
    assert "<|im_start|>assistant" in b._tok.decode(enc["input_ids"][0])
    task = make_task(1)
    r1 = b.paraphrase(task.docs[0], 1, seed=3)
    r2 = b.paraphrase(task.docs[0], 1, seed=3)
    assert r1.raw.strip() and r1.raw == r2.raw  # it writes something, and a seed repeats it
    assert len(b._tok(r1.raw, add_special_tokens=False)["input_ids"]) <= 8 + 1
