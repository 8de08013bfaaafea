"""Bad input to notebook 01's readers (issue 13's data cases): each gives a message naming the
file (and line) and the fix, or a warning on the terminal, and keeps what can be kept.

One row per case: a builder that writes the bad input under ``tmp_path`` and returns the call to
make, what must happen (an exception type, ``"warning"`` for a logged warning, or ``None`` for
"just works"), the substrings the message must contain, and an optional check of the result.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from logcap import kinject_log, text

from kinject_utils import data, tasks
from kinject_utils.tasks import TaskFormatError

ROW = '{"id": "q%d", "question": "What is %d?", "choices": ["a", "b", "c", "d"], "answer": 0}'


def _mmlu(tmp: Path, test: bytes = b"Q1?,a,b,c,d,A\n", dev: bytes = b"Q?,a,b,c,d,A\n") -> Path:
    (tmp / "test").mkdir(parents=True)
    (tmp / "dev").mkdir()
    (tmp / "test" / "toy_test.csv").write_bytes(test)
    (tmp / "dev" / "toy_dev.csv").write_bytes(dev)
    return tmp


def _docs(tmp: Path, **files: bytes) -> Path:
    d = tmp / "docs"
    d.mkdir()
    (d / "good.txt").write_text("A good document.", encoding="utf-8")
    for name, body in files.items():
        (d / name.replace("_", ".")).write_bytes(body)
    return d


def _questions(tmp: Path, body: bytes, name: str = "q.jsonl") -> Path:
    (tmp / name).write_bytes(body)
    return tmp / name


CASES = [
    # MMLU CSVs
    ("mmlu_non_utf8", lambda t: lambda: data.load_mmlu(
        "toy", str(_mmlu(t, test=b"Q1?,a,b,c,d,A\nQ\xff2?,a,b,c,d,B\n"))),
     TaskFormatError, ["toy_test.csv, line 2", "not valid UTF-8", "0xff", "re-save the file as UTF-8"], None),
    ("mmlu_empty_test", lambda t: lambda: data.load_mmlu("toy", str(_mmlu(t, test=b""))),
     TaskFormatError, ["toy_test.csv", "no rows", "questions", "restore the original CSV"], None),
    ("mmlu_empty_dev", lambda t: lambda: data.load_mmlu("toy", str(_mmlu(t, dev=b"\n"))),
     TaskFormatError, ["toy_dev.csv", "no rows", "5-shot", "restore the original CSV"], None),
    ("mmlu_bom", lambda t: lambda: data.load_mmlu("toy", str(_mmlu(t, test=b"\xef\xbb\xbfQ1?,a,b,c,d,A\n"))),
     None, [], lambda task: task.questions[0].question == "Q1?"),
    # questions.jsonl
    ("questions_bom", lambda t: lambda: data.load_questions(_questions(t, b"\xef\xbb\xbf" + (ROW % (1, 1)).encode())),
     None, [], lambda qs: [q.id for q in qs] == ["q1"]),
    ("questions_line_after_blank", lambda t: lambda: data.load_questions(
        _questions(t, f"{ROW % (1, 1)}\n\n{{broken\n".encode())),
     TaskFormatError, ["q.jsonl, line 3", "not valid JSON", "Fix or delete that line"], None),
    ("questions_bad_row_after_blanks", lambda t: lambda: data.load_questions(
        _questions(t, f"\n{ROW % (1, 1)}\n\n\n{json.dumps({'id': 'q2', 'question': 'x?'})}\n".encode())),
     TaskFormatError, ["q.jsonl, line 5", "missing field(s) ['choices', 'answer']"], None),
    ("task_folder_bom_and_blank_lines", lambda t: lambda: tasks.load_task(_questions(t, (
        "\ufeff" + ROW % (1, 1) + "\n\n" + ROW % (2, 2) + "\n").encode(), "questions.jsonl").parent),
     None, [], lambda task: [q.id for q in task.questions] == ["q1", "q2"]),
    # documents
    ("doc_all_nul", lambda t: lambda: data.load_documents(_docs(t, nul_txt=b"\x00" * 4096)),
     "warning", ["nul.txt", "binary", "convert it to UTF-8 text"], lambda docs: [d.doc_id for d in docs] == ["good"]),
    ("doc_random_bytes_txt", lambda t: lambda: data.load_documents(
        _docs(t, noise_txt=random.Random(0).randbytes(4096))),
     "warning", ["noise.txt", "binary"], lambda docs: [d.doc_id for d in docs] == ["good"]),
    ("doc_random_bytes_pdf", lambda t: lambda: data.load_documents(
        _docs(t, paper_pdf=random.Random(1).randbytes(4096))),
     "warning", ["paper.pdf", "skipped", "pdftotext"], lambda docs: [d.doc_id for d in docs] == ["good"]),
    ("doc_very_large", lambda t: lambda: data.load_documents(_docs(t, big_txt=b"word " * 220_000)),
     "warning", ["big.txt", "very large document", "1.1 MB", "split it"],
     lambda docs: sorted(d.doc_id for d in docs) == ["big", "good"]),
    ("doc_folder_all_bad", lambda t: lambda: data.load_documents(_docs(t, good_txt=b"\x00\x00")),
     TaskFormatError, ["no usable documents", "see the warnings"], None),
    # configuration
    ("tasks_as_string", lambda t: lambda: data.build_tasks("fictional_news", t),
     ValueError, ["got the string 'fictional_news'", "TASKS: [fictional_news]"], None),
]


@pytest.mark.parametrize("build, expect, must_say, check", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named_with_its_fix(tmp_path, build, expect, must_say, check):
    call = build(tmp_path)
    with kinject_log() as rec:
        if isinstance(expect, type):
            with pytest.raises(expect) as exc:
                call()
            msg = str(exc.value)
        else:
            result = call()
            msg = text(rec)
            assert bool(rec) == (expect == "warning"), msg
    for s in must_say:
        assert s in msg, f"{s!r} not in: {msg}"
    if check is not None:
        assert check(result)


def test_skipped_document_warning_reaches_the_terminal(tmp_path):
    """Not only inside a notebook: the logger prints to the process's stderr."""
    folder = _docs(tmp_path, noise_txt=random.Random(0).randbytes(4096))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = f"from kinject_utils import data; data.load_documents({str(folder)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "noise.txt" in out.stderr and "binary" in out.stderr, out.stderr
