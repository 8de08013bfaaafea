"""Secrets and bad input in notebooks 02 and 04's stages.

The leak test runs the paraphrase stage - as a library call and as notebook 02 through the runner -
against a loopback server that echoes the request's Authorization header (a) inside a 500 error
body, (b) in a 200 reply cut at a truncation point and (c) inside a successful completion, then
greps every file written and the captured terminal output for every 8-character piece of the key.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kinject_utils import paraphrase as P
from kinject_utils.data import load_documents
from kinject_utils.retrieval import RetrievalConfig, load_contexts
from kinject_utils.tasks import Document, Question, Task

KEY = "kq7Zx2Lm9Vb4Nw8Tr3Yh6Pd1Sg5Fj0CkTu"  # no sk- prefix: only the key-run redaction can catch pieces
ENV = "KINJECT_LEAK_TEST_KEY"
PIECES = {KEY[i:i + 8] for i in range(len(KEY) - 7)}


class EchoServer:
    """127.0.0.1 only; request 1: 500 echoing the header, 2: a 200 body cut inside the key, then
    successful completions whose content (and one paraphrase) carries the header. Bounded: it
    serves at most ``limit`` requests, then answers 503."""

    def __init__(self, limit: int = 200) -> None:
        self.n, self.limit, self.lock = 0, limit, threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                with srv.lock:
                    srv.n += 1
                    n = srv.n
                text = body["messages"][0]["content"].split("Input paragraph:\n", 1)[-1]
                if n > srv.limit:
                    status, data = 503, b'{"error": "limit"}'
                elif n == 1:
                    status, data = 500, json.dumps({"error": {"message": f"bad upstream; got headers "
                                                              f"Authorization: {auth}"}}).encode()
                elif n == 2:
                    status, data = 200, f'{{"debug": "Authorization: {auth} token={KEY}'[:60].encode()
                else:
                    paras = [f"In other words: {text}", f"Put differently, {text} (sent with {auth}, {KEY[3:20]})"]
                    content = f"Echo {auth}\n" + json.dumps({"paraphrases": paras})
                    status, data = 200, json.dumps({"choices": [{"message": {"role": "assistant",
                                                                             "content": content}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    s = EchoServer()
    yield s
    s.close()


def leaks(text: str) -> list[str]:
    return sorted(p for p in PIECES if p in text)


def files_leaking(*roots: Path) -> dict[str, list[str]]:
    out = {}
    for root in roots:
        for f in Path(root).rglob("*"):
            if f.is_file():
                found = leaks(f.read_bytes().decode("utf-8", errors="replace"))
                if found:
                    out[str(f)] = found
    return out


def toy_task() -> Task:
    docs = [Document(f"d{i}", "", f"Mayor Ilsa Brandt{i} opened bridge {i} in Quellport in 2027.") for i in range(2)]
    qs = [Question(f"q{i}", "Who opened it?", [f"Ilsa Brandt{i}", "Bo"], 0, [f"d{i}"]) for i in range(2)]
    return Task("toy", qs, docs)


def test_key_echoed_by_the_server_never_leaves_the_process_library(echo, tmp_path, capfd):
    task = toy_task()
    b = P.OpenAICompatibleBackend(echo.url, "served", api_key_env=ENV, timeout=5, max_retries=1, heartbeat_s=0.05)
    out, st = P.paraphrase_task(task, b, n=2, cache_dir=tmp_path / "cache" / "paraphrases")
    P.write_paraphrases(tmp_path, task.name, out, b, task)
    P.write_stats(tmp_path, [st])
    assert echo.n >= 4 and b.counters["server_errors"] == 1 and b.counters["bad_bodies"] == 1
    assert all(len(v) == 2 for v in out.values()), out
    assert "[REDACTED]" in out["d0"][1]  # the echoed key was in an accepted paraphrase: masked
    P.paraphrase_task(task, b, n=2, cache_dir=tmp_path / "cache" / "paraphrases")  # cached re-run logs too
    echo.n = 0  # 500 then a cut 200 then success, but one attempt only: the error messages
    b1 = P.OpenAICompatibleBackend(echo.url, "served", api_key_env=ENV, timeout=5, max_retries=0)
    errors = []
    for _ in range(2):
        with pytest.raises(P.ParaphraseBackendError) as exc:
            b1.complete([{"role": "user", "content": "x"}], seed=0)
        errors.append(str(exc.value))
        print(exc.value)  # as a notebook would show it
    assert "HTTP 500" in errors[0] and "not a chat completion" in errors[1]
    assert not any(leaks(e) for e in errors), errors
    captured = capfd.readouterr()
    assert not leaks(captured.out + captured.err)
    assert not files_leaking(tmp_path)


@pytest.mark.slow
def test_key_echoed_by_the_server_never_leaves_the_process_notebook(echo, tmp_path, capfd):
    from kinject_utils.runner import run_notebooks

    results, runs = tmp_path / "results", tmp_path / "runs"
    cfg = {"name": "leak", "offline": True, "params": {"RESULTS_DIR": str(results), "SEED": 0, "TASK_SIZE": "tiny",
                                                        "TASKS": ["fictional_news"]},
           "notebooks": {"02": {"PARAPHRASE_BACKEND": "openai", "OPENAI_BASE_URL": echo.url,
                                "PARAPHRASE_MODEL": "served", "OPENAI_API_KEY_ENV": ENV, "N_PARAPHRASES": 2,
                                "LOCAL_SAMPLE_DOCS": 0, "REQUEST_TIMEOUT_S": 5.0, "REQUEST_RETRIES": 1}}}
    run_notebooks(cfg, only=["01", "02"], out_dir=runs)
    assert echo.n >= 4
    got = P.read_paraphrases(results, "fictional_news")
    assert got and all(len(v) == 2 for v in got.values())
    captured = capfd.readouterr()
    assert not leaks(captured.out + captured.err)
    assert not files_leaking(runs, results)


def test_a_failed_pass_keeps_earlier_accepted_paraphrases(echo, tmp_path):
    task = toy_task()
    b = P.OpenAICompatibleBackend(echo.url, "served", api_key_env=ENV, timeout=5, max_retries=1)
    good, _ = P.paraphrase_task(task, b, n=2)
    path = P.write_paraphrases(tmp_path, task.name, good, b, task)
    before = path.read_bytes()
    empty = {d.doc_id: [] for d in task.docs}  # a pass where every reply failed to parse
    P.write_paraphrases(tmp_path, task.name, empty, b, task)
    assert P.read_paraphrases(tmp_path, task.name) == good and path.read_bytes() == before
    partial = {"d0": good["d0"][:1], "d1": good["d1"]}
    P.write_paraphrases(tmp_path, task.name, partial, b, task)
    assert P.read_paraphrases(tmp_path, task.name) == good
    changed = toy_task()
    changed.docs[0] = Document("d0", "", "A different document now.")
    P.write_paraphrases(tmp_path, task.name, {"d0": [], "d1": []}, b, changed)  # a changed doc is redone
    assert P.read_paraphrases(tmp_path, task.name) == {"d0": [], "d1": good["d1"]}


# ------------------------------------------------------------------------------------------------
# bad input: each message names the problem and the fix
# ------------------------------------------------------------------------------------------------
def _bad_paraphrase_file(tmp_path):
    f = tmp_path / "02_paraphrases" / "toy.jsonl"
    f.parent.mkdir(parents=True)
    f.write_text('{"doc_id": "d0", "paraphrases": "not a list"}\n')
    return P.read_paraphrases(tmp_path, "toy")


def _no_openai(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed
    P.OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m").complete([{"role": "user", "content": "x"}], 0)


BAD = [  # (id, call, words naming the problem, words naming the fix)
    ("key in OPENAI_API_KEY_ENV", lambda t, m: P.OpenAICompatibleBackend("http://x/v1", "m", api_key_env=KEY),
     ["OPENAI_API_KEY_ENV", "looks like a key"], ["export OPENAI_API_KEY", "OPENAI_API_KEY_ENV: OPENAI_API_KEY"]),
    ("base url without scheme", lambda t, m: P.OpenAICompatibleBackend("localhost:8000/v1", "m"),
     ["OPENAI_BASE_URL", "http://"], ["http://localhost:8000/v1"]),
    ("timeout zero", lambda t, m: P.OpenAICompatibleBackend("http://x/v1", "m", timeout=0),
     ["REQUEST_TIMEOUT_S", "got 0"], ["> 0"]),
    ("negative retries", lambda t, m: P.OpenAICompatibleBackend("http://x/v1", "m", max_retries=-1),
     ["REQUEST_RETRIES", "got -1"], [">= 0"]),
    ("unknown backend", lambda t, m: P.make_backend("gpt4"), ["unknown paraphrase backend 'gpt4'"],
     ["'generator', 'local' or 'openai'"]),
    ("n zero", lambda t, m: P.paraphrase_task(toy_task(), P.GeneratorRewordingsBackend(toy_task()), n=0),
     ["n (paraphrases per document)", "got 0"], [">= 1"]),
    ("no paraphrase file", lambda t, m: P.read_paraphrases(t, "toy"), ["toy.jsonl not found"], ["run notebook 02"]),
    ("bad paraphrase row", lambda t, m: _bad_paraphrase_file(t), ["toy.jsonl, row 1", "doc_id"],
     ["delete the file and re-run notebook 02"]),
    ("openai not installed", _no_openai, ["needs the openai client package"], ["pip install kinject[openai]"]),
    ("not an instruct model", lambda t, m: P.LocalChatBackend("minilm-l6"), ["not an instruct"], ["smollm2-135m"]),
    ("unknown retriever", lambda t, m: RetrievalConfig(retriever="sparse"), ["RetrievalConfig.retriever", "'sparse'"],
     ["('dense', 'bm25', 'hybrid')"]),
    ("passage too short", lambda t, m: RetrievalConfig(passage_words=5), ["passage_words=5"], ["use >= 10"]),
    ("no retrieval yet", lambda t, m: load_contexts(t, toy_task(), 1, None, 100), ["no retrieval results", "toy"],
     ["run notebook 04"]),
    ("corpus path missing", lambda t, m: load_documents(t / "nope"), ["nope not found"],
     ["put .txt, .md or .jsonl files there"]),
]


@pytest.mark.parametrize("call, problem, fix", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_problem_and_the_fix(call, problem, fix, tmp_path, monkeypatch):
    with pytest.raises((ValueError, FileNotFoundError, P.ParaphraseBackendError)) as exc:
        call(tmp_path, monkeypatch)
    msg = str(exc.value)
    for words in problem + fix:
        assert words in msg, f"{words!r} not in: {msg}"
    assert not leaks(msg)
