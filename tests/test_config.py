"""Bad runner configs: each is rejected before anything runs, naming the problem AND the fix, never a secret."""
from pathlib import Path

import pytest

from kinject_utils import runner
from kinject_utils.config import ConfigError
from kinject_utils.secrets import check_env_name, looks_like_secret

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-proj-Q7f3ZkLm9TxV2bNc8RwYe4HjA1sD"      # never to be echoed or written
SECRET_ENVLIKE = "A1B2C3D4E5F6G7H8J9K0L1M2N3P4Q5R6"   # letters+digits, passes a naive ^[A-Z0-9_]+$ name check


def _write(tmp_path: Path, body: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return p


# (id, YAML body or None for tiny.yaml, --set items, --only, [fragments naming the problem], [fragments naming the fix])
CASES = [
    ("misspelt notebook key", 'notebooks: {"01": {TASK_SIZ: large}}', [], None,
     ["notebooks.01.TASK_SIZ", "no parameter TASK_SIZ"], ["Did you mean TASK_SIZE?", "Its parameters:", "TOKENIZER"]),
    ("unknown notebook", 'notebooks: {"09": {SEED: 1}}', [], None,
     ["notebooks.09", "no notebook 09"], ["01, 02, 03, 04, 05, 06, 07"]),
    ("unknown notebook in run", 'run: ["01", "09"]', [], None,
     ["run: there is no notebook 09"], ["remove 09 from 'run'", "01, 02, 03, 04, 05, 06, 07"]),
    ("TASKS as a string", "params: {TASKS: fictional_news}", [], None,
     ["params.TASKS"], ["TASKS must be a list, e.g. [fictional_news]"]),
    ("MODELS as a string", "params: {MODELS: smollm2-135m}", [], None,
     ["params.MODELS"], ["MODELS must be a list, e.g. [smollm2-135m]"]),
    ("timeout not a number", "timeout_per_cell: ten", [], None,
     ["'timeout_per_cell'"], ["number of seconds", "timeout_per_cell: 600"]),
    ("--only abc", None, [], ["abc"], ["--only 'abc'"], ["--only 04 05", "01, 02, 03, 04, 05, 06"]),
    ("unknown top-level param", "params: {RESULT_DIR: x}", [], None,
     ["RESULT_DIR", "no notebook declares"], ["RESULTS_DIR?"]),
    ("key-like value in a param", f'notebooks: {{"02": {{OPENAI_BASE_URL: "{SECRET}"}}}}', [], None,
     ["notebooks.02.OPENAI_BASE_URL", "looks like an API key"], ["export it in your shell", "OPENAI_API_KEY_ENV"]),
    ("key pasted into OPENAI_API_KEY_ENV", f'notebooks: {{"02": {{OPENAI_API_KEY_ENV: "{SECRET}"}}}}', [], None,
     ["OPENAI_API_KEY_ENV", "NAME of an environment variable"],
     ["export OPENAI_API_KEY=", "OPENAI_API_KEY_ENV: OPENAI"]),
    ("env-name-shaped key in *_ENV", None, [f"02.OPENAI_API_KEY_ENV={SECRET_ENVLIKE}"], None,
     ["OPENAI_API_KEY_ENV", "looks like a key"], ["OPENAI_API_KEY_ENV: OPENAI_API_KEY"]),
    ("key via --set", None, [f"03.FT_SETTINGS={{api: Bearer {SECRET}}}"], None,
     ["FT_SETTINGS", "looks like an API key"], ["export it in your shell"]),
    ("wrong type via --set", None, ["03.EPOCHS=three"], None,
     ["notebooks.03.EPOCHS"], ["EPOCHS must be an int, e.g. 3"]),
    ("extends a missing file", "extends: nowhere.yaml", [], None,
     ["nowhere.yaml not found", "named by 'extends'"], ["relative to that file"]),
    ("misspelt top-level field", "parms: {}", [], None, ["bad.yaml: RunSettings has no setting 'parms'"],
     ["(did you mean params?)", "allowed: description, extends, name"]),
    ("misspelt FT_SETTINGS key", None, ["03.FT_SETTINGS={lrr: 1e-3}"], None,
     ["notebooks.03.FT_SETTINGS", "FinetuneConfig has no setting 'lrr'"], ["(did you mean lr?)", "warmup_ratio"]),
    ("params not a mapping", "params: [1, 2]", [], None, ["'params' must be a mapping"], ["params: {SEED: 0}"]),
    ("bad --set syntax", None, ["EPOCHS"], None, ["--set 'EPOCHS'"], ["--set 03.EPOCHS=3"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_rejected_naming_problem_and_fix(tmp_path, case, capsys):
    _, body, sets, only, problem, fix = case
    cfg = _write(tmp_path, body) if body is not None else ROOT / "configs" / "tiny.yaml"
    out = tmp_path / "runs"
    with pytest.raises(ConfigError) as info:
        runner.run_notebooks(cfg, only=only, root=ROOT, out_dir=out, sets=sets)
    msg = str(info.value)
    for frag in problem + fix:
        assert frag in msg, f"message lacks {frag!r}: {msg}"
    # nothing ran, nothing was written, and no secret (or 8 characters of one) is in the message or output
    assert not out.exists()
    printed = msg + "".join(capsys.readouterr())
    for secret in (SECRET, SECRET_ENVLIKE):
        assert not any(secret[i:i + 8] in printed for i in range(len(secret) - 7))


def test_cli_reports_a_config_error_in_one_line_with_exit_2(tmp_path, capsys):
    bad = _write(tmp_path, f'notebooks: {{"02": {{OPENAI_API_KEY_ENV: "{SECRET}"}}}}')
    assert runner.main(["-f", str(bad), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("[kinject] config error:") and err.count("\n") == 1 and SECRET[:8] not in err
    assert not (tmp_path / "runs").exists()


def test_runs_folder_not_writable_is_one_line_naming_path_and_fix(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        runner.run_notebooks(ROOT / "configs" / "tiny.yaml", only=["06"], root=ROOT, out_dir=blocker / "runs")
    msg = str(info.value)
    assert f"runs folder {blocker / 'runs'} is not writable" in msg and "--out DIR" in msg and "\n" not in msg


def test_results_folder_not_writable_names_the_parameter(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        runner.run_notebooks(ROOT / "configs" / "tiny.yaml", only=["06"], root=ROOT, out_dir=tmp_path / "runs",
                             sets=[f"RESULTS_DIR={blocker / 'results'}"])
    assert "RESULTS_DIR" in str(info.value) and "--set RESULTS_DIR=DIR" in str(info.value)


def test_extends_deep_merges_the_base(tmp_path):
    _write(tmp_path, 'params: {SEED: 1, TASKS: [mmlu]}\nnotebooks: {"03": {EPOCHS: 4, N_PAR: 3}}\n', "base.yaml")
    child = _write(tmp_path, 'extends: base.yaml\nname: child\nparams: {SEED: 2}\nnotebooks: {"03": {EPOCHS: 1}}\n')
    s = runner.load_config(child)
    assert s.name == "child" and s.params == {"SEED": 2, "TASKS": ["mmlu"]}
    assert s.notebooks["03"] == {"EPOCHS": 4 - 3, "N_PAR": 3}


@pytest.mark.parametrize("value,secret", [
    ("sk-abcdefghijklmnop1234", True), ("hf_AbCdEfGhIjKlMnOpQrStUv", True), ("Bearer abc.def.ghi-123", True),
    ("Zk3LmQ9xTv2BnC8rWyE4hJa1sD7fG6", True), ("OPENAI_API_KEY", False), ("../shared/data/mmlu", False),
    ("http://localhost:8000/v1", False), ("fictional_news", False), ("BAAI/bge-large-en", False),
    ("runs/paper_mistral7b/results", False),
])
def test_looks_like_secret(value, secret):
    assert looks_like_secret(value) is secret


@pytest.mark.parametrize("value,is_name", [
    ("OPENAI_API_KEY", True), ("VLLM_KEY_2", True), (SECRET, False), (SECRET_ENVLIKE, False),
    ("openai_api_key", False), ("OPENAI-API-KEY", False), ("", False),
])
def test_one_env_name_check_guards_the_config_and_the_backend(value, is_name):
    """A *_ENV value is judged once, by secrets.check_env_name: the runner's config check and the paraphrase
    backend (a notebook run by hand) accept and refuse the same values, and neither echoes a refused one."""
    from kinject_utils import paraphrase as P
    from kinject_utils.config import RunSettings

    assert P.check_env_name is check_env_name
    attempts = [lambda: RunSettings(notebooks={"02": {"OPENAI_API_KEY_ENV": value}}),
                lambda: P.OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", api_key_env=value)]
    for attempt in attempts:
        if is_name:
            attempt()
            continue
        with pytest.raises(ValueError) as info:
            attempt()
        assert "OPENAI_API_KEY_ENV must hold the NAME of an environment variable" in str(info.value)
        assert not value or value not in str(info.value)


def test_a_config_given_as_a_mapping_answers_did_you_mean_too(tmp_path):
    with pytest.raises(ConfigError, match=r"RunSettings has no setting 'parms' \(did you mean params\?\)"):
        runner.run_notebooks({"name": "t", "parms": {"SEED": 1}}, root=ROOT, out_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
