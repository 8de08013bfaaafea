"""A loopback stand-in for the Hugging Face hub's dataset file endpoint, for the data resolver's tests.

It serves what the hub serves for the two datasets kinject downloads, laid out as published:
``cais/mmlu`` as one folder per subject with ``{test,validation,dev}-00000-of-00001.parquet`` (columns
question, subject, choices[4], answer 0-3) plus an ``all/`` folder that must never be fetched, and
``kaist-ai/fictional-knowledge`` as ``fictional_knowledge.json`` at the repository root. Like the hub,
``/datasets/<repo>/resolve/<revision>/<path>`` answers a large (LFS) file with a 302 to the storage
host carrying ``X-Linked-Etag`` (the SHA-256), ``X-Linked-Size`` and ``X-Repo-Commit``; an unknown path
is a 404 with ``X-Error-Code: EntryNotFound``. Binds 127.0.0.1 only. ``requests`` logs every path asked.

It also stands in for GitHub's raw-file host (``KINJECT_GITHUB_RAW``), where EntityQuestions comes from:
``/<owner>/<name>/<revision>/<path>`` answers 200 with the bytes, their length and an ETag that is *not*
their SHA-256 (GitHub does not document its ETag as one, so kinject must not take it for one).
:func:`entity_questions_files` generates a small release in the real layout (``dataset/<split>/<P>.<split>.json``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "c30699e8356da336a370243923dbaf21066bb9fe"
SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")


def _parquet(rows: list[list[str]], subject: str) -> bytes:
    import pandas as pd

    frame = pd.DataFrame({"question": [r[0] for r in rows], "subject": subject,
                          "choices": [list(r[1:5]) for r in rows],
                          "answer": ["ABCD".index(r[5].strip()) for r in rows]})
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def hub_files(mmlu_csv_dir: Path, fk_dir: Path) -> dict[str, dict[str, bytes]]:
    """repo -> path -> bytes, built from the original CSVs and JSON (the same rows the hub holds)."""
    mmlu: dict[str, bytes] = {}
    for s in SUBJECTS:
        for split, src in (("test", "test"), ("dev", "dev"), ("validation", "dev")):
            text = (mmlu_csv_dir / src / f"{s}_{src}.csv").read_text(encoding="utf-8")
            mmlu[f"{s}/{split}-00000-of-00001.parquet"] = _parquet(list(csv.reader(io.StringIO(text))), s)
    mmlu["all/auxiliary_train-00000-of-00001.parquet"] = b"\0" * 4096  # never to be downloaded
    fk = {"fictional_knowledge.json": (fk_dir / "fictional_knowledge.json").read_bytes(),
          "README.md": b"---\nlicense: cc-by-4.0\n---\n"}
    return {"cais/mmlu": mmlu, "kaist-ai/fictional-knowledge": fk}


def entity_questions_files(relations: tuple[str, ...], splits: tuple[str, ...] = ("train", "test"),
                           per_file: int = 6) -> dict[str, dict[str, bytes]]:
    """A tiny EntityQuestions in the release's layout: ``per_file`` invented questions per relation and split.

    Item 0 of each train file has two answers (an alias); the last test item repeats train's item 1 (a duplicate
    question of the same relation); one test item has an empty answer list (skipped by the loader).
    """
    files: dict[str, bytes] = {}
    for rel in relations:
        for split in splits:
            rows = [{"question": f"What is the {rel} of Entity {split} {i}?", "answers": [f"Object {rel} {split} {i}"]}
                    for i in range(per_file)]
            if split == "train":
                rows[0]["answers"].append(f"Alias {rel} 0")
            else:
                rows[-1] = {"question": f"What is the {rel} of Entity train 1?", "answers": [f"Object {rel} train 1"]}
                rows[-2]["answers"] = []
            files[f"dataset/{split}/{rel}.{split}.json"] = json.dumps(rows, indent=4).encode()
    return {"princeton-nlp/EntityQuestions": files}


class LoopbackHub:
    """``with LoopbackHub(files) as hub: hub.endpoint`` -> ``http://127.0.0.1:<port>``; ``hub.stop()`` ends it."""

    def __init__(self, files: dict[str, dict[str, bytes]], tamper: bool = False,
                 raw: dict[str, dict[str, bytes]] | None = None):
        """``tamper``: the storage host flips one byte of every file it sends (the hub's SHA-256 stays right).

        ``raw``: repo -> path -> bytes served as GitHub's raw host serves them (``/<repo>/<revision>/<path>``).
        """
        self.files = files
        self.raw = raw or {}
        self.requests: list[str] = []
        blobs = {hashlib.sha256(b).hexdigest(): b for repo in files.values() for b in repo.values()}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, data: bytes, etag: str, body: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].split("/")
                if parts[1:2] == ["lfs"] and len(parts) == 3 and parts[2] in blobs:
                    data = blobs[parts[2]]
                    if tamper:
                        data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
                    return self._send(data, f'"{parts[2]}"', body)
                # GitHub raw: /<owner>/<name>/<revision>/<path...>
                if len(parts) >= 5 and f"{parts[1]}/{parts[2]}" in hub.raw:
                    data = hub.raw[f"{parts[1]}/{parts[2]}"].get("/".join(parts[4:]))
                    if data is not None:
                        return self._send(data, f'W/"{hashlib.sha256(data + b"etag").hexdigest()}"', body)
                # /datasets/<owner>/<name>/resolve/<revision>/<path...>
                if len(parts) >= 7 and parts[1] == "datasets" and parts[4] == "resolve":
                    repo, path = f"{parts[2]}/{parts[3]}", "/".join(parts[6:])
                    data = hub.files.get(repo, {}).get(path)
                    if data is not None:
                        sha = hashlib.sha256(data).hexdigest()
                        self.send_response(302)
                        self.send_header("Location", f"/lfs/{sha}")
                        self.send_header("X-Linked-Etag", f'"{sha}"')
                        self.send_header("X-Linked-Size", str(len(data)))
                        self.send_header("X-Repo-Commit", COMMIT)
                        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                msg = json.dumps({"error": "Entry not found"}).encode()
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                if body:
                    self.wfile.write(msg)

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()
