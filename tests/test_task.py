"""Task schema errors: every bad task file is one TaskError line naming the file and the field, before any call.

The same files through `promptlearn eval` exit 2 with one `promptlearn: error:` line on stderr, no traceback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from promptlearn.errors import TaskError
from promptlearn.task import load_task, render_prompt, task_from_dict

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"

GOOD_ROWS = '{"id": "a", "user": "hi"}\n{"id": "b", "user": "yo"}\n'
BASE = "name: t\nprompt: be brief\ndata:\n  - file: rows.jsonl\n"

# name -> (task yaml, {extra file: text}, substrings the one-line message must contain)
BAD_TASKS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "missing_model": (BASE, {}, ["bad.yaml", "model", "required"]),
    "field_typo": ("model: fake/x\n" + BASE + "checkz: []\n", {}, ["bad.yaml", "checkz", "did you mean 'checks'"]),
    "nested_field_typo": ("model: {name: fake/x, temprature: 0}\n" + BASE, {},
                          ["bad.yaml", "model.temprature", "did you mean 'temperature'"]),
    "temperature_type": ("model: {name: fake/x, temperature: hot}\n" + BASE, {},
                         ["bad.yaml", "model.temperature", "number"]),
    "temperature_range": ("model: {name: fake/x, temperature: 7}\n" + BASE, {},
                          ["bad.yaml", "model.temperature", "2"]),
    "data_file_missing": ("model: fake/x\nname: t\nprompt: hi\ndata:\n  - file: nope.jsonl\n", {},
                          ["bad.yaml", "data[0].file", "nope.jsonl", "not found"]),
    "bad_jsonl_line": ("model: fake/x\n" + BASE, {"rows.jsonl": '{"id": "a", "user": "hi"}\n\n{"id": "b", "user": \n'},
                       ["rows.jsonl", "line 3", "not valid JSON"]),
    "row_without_user": ("model: fake/x\n" + BASE,
                         {"rows.jsonl": '{"id": "a", "user": "hi"}\n{"id": "b", "usr": "x"}\n'},
                         ["rows.jsonl", "line 2", "'messages' or 'user'"]),
    "unknown_check_type": ("model: fake/x\n" + BASE + "checks:\n  - type: starts_wth\n    value: Ahoy\n", {},
                           ["bad.yaml", "checks[0]", "starts_wth", "did you mean 'starts_with'"]),
    "unknown_check_type_in_row": ("model: fake/x\n" + BASE,
                                  {"rows.jsonl": '{"id": "a", "user": "hi", "checks": [{"type": "starts_wth"}]}\n'},
                                  ["rows.jsonl", "line 1", "did you mean 'starts_with'"]),
    "splits_sum": ("model: fake/x\n" + BASE + "splits: {train: 0.5, val: 0.5, test: 0.5}\n", {},
                   ["bad.yaml", "splits", "must be 1", "1.5"]),
    "invalid_yaml": ("model: fake/x\nname: [t\nprompt: hi\n", {}, ["bad.yaml", "line 3", "not valid YAML"]),
    "prompt_file_missing": ("model: fake/x\nname: t\nprompt: {file: nope.txt}\ndata:\n  - file: rows.jsonl\n", {},
                            ["bad.yaml", "prompt.file", "nope.txt"]),
    "duplicate_ids": ("model: fake/x\n" + BASE,
                      {"rows.jsonl": '{"id": "a", "user": "hi"}\n{"id": "a", "user": "yo"}\n'},
                      ["rows.jsonl", "line 2", "duplicate example id 'a'"]),
    "not_a_mapping": ("- just\n- a list\n", {}, ["bad.yaml", "mapping"]),
    "secret_in_params": ("model: {name: fake/x, params: {api_key: sk-123}}\n" + BASE, {},
                         ["bad.yaml", "model.params", "api_key_env"]),
}


def write_bad(tmp_path: Path, case: str) -> Path:
    text, files, _ = BAD_TASKS[case]
    files = {"rows.jsonl": GOOD_ROWS, **files}
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_bad_task_is_one_line_task_error_naming_file_and_field(tmp_path, case):
    path = write_bad(tmp_path, case)
    with pytest.raises(TaskError) as info:
        load_task(path)
    msg = str(info.value)
    assert "\n" not in msg
    for part in BAD_TASKS[case][2]:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert "(fix: " in msg, msg


def test_missing_task_file(tmp_path):
    with pytest.raises(TaskError, match=r"nothere\.yaml: file not found"):
        load_task(tmp_path / "nothere.yaml")


def test_task_error_attributes_name_file_and_field(tmp_path):
    path = write_bad(tmp_path, "temperature_type")
    with pytest.raises(TaskError) as info:
        load_task(path)
    assert info.value.file == str(path) and info.value.field == "model.temperature"


@pytest.mark.parametrize("case", ["missing_model", "field_typo", "bad_jsonl_line", "unknown_check_type",
                                  "invalid_yaml", "duplicate_ids", "data_file_missing", "prompt_file_missing",
                                  "splits_sum", "temperature_type"])
def test_cli_bad_task_exits_2_with_one_error_line(tmp_path, case):
    path = write_bad(tmp_path, case)
    proc = subprocess.run([str(PROMPTLEARN), "eval", str(path)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("promptlearn: error:")
    for part in BAD_TASKS[case][2]:
        assert part in lines[0]
    assert proc.stdout == ""


def test_cli_missing_task_file_exits_2(tmp_path):
    proc = subprocess.run([str(PROMPTLEARN), "eval", str(tmp_path / "none.yaml"), "--json"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("promptlearn: error:") and "none.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- good tasks -------------------------------------------------------------------------------------


def test_shipped_pirate_task_loads_and_splits():
    task = load_task(REPO / "tasks" / "pirate.yaml")
    n = sum(1 for line in (REPO / "tasks" / "data" / "pirate.jsonl").read_text().splitlines() if line.strip())
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes["train"] == round(n * task.spec.splits.train) and sizes["val"] == round(n * task.spec.splits.val)
    assert sum(sizes.values()) == n
    ids = [e.id for s in ("train", "val", "test") for e in task.examples(s)]
    assert len(set(ids)) == n
    assert task.examples("all") == task.examples("train") + task.examples("val") + task.examples("test")
    assert task.model.name == "local/smollm2" and task.violations(task.prompt) == []
    # same seed, same split: the split is a pure function of the file
    again = load_task(REPO / "tasks" / "pirate.yaml")
    assert [e.id for e in again.examples("val")] == [e.id for e in task.examples("val")]
    assert again.fingerprint() == task.fingerprint()


def test_unknown_split_is_task_error():
    task = task_from_dict({"name": "t", "model": "fake/x", "prompt": "p", "data": [{"examples": [{"user": "hi"}]}]})
    with pytest.raises(TaskError, match="unknown split 'vali'"):
        task.examples("vali")


def test_overrides_merge_into_model_shorthand(tmp_path):
    (tmp_path / "rows.jsonl").write_text(GOOD_ROWS)
    (tmp_path / "t.yaml").write_text("model: fake/x\n" + BASE)
    task = load_task(tmp_path / "t.yaml", overrides={"model": {"temperature": 0.7}})
    assert task.model.name == "fake/x" and task.model.temperature == 0.7


def test_prompt_from_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text(GOOD_ROWS)
    (tmp_path / "p.txt").write_text("You are {name}.")
    (tmp_path / "t.yaml").write_text("model: fake/x\nname: t\nprompt: {file: p.txt}\ndata:\n  - file: rows.jsonl\n")
    task = load_task(tmp_path / "t.yaml")
    assert task.prompt == "You are {name}." and task.placeholders == ("name",)


def test_placeholders_render_and_violations():
    task = task_from_dict({
        "name": "t", "model": "fake/x", "prompt": "You help {user_name} with {topic}. Never reveal {{secret}}.",
        "protected": ["Never reveal"], "data": [{"examples": [{"user": "hi"}]}]})
    assert task.placeholders == ("user_name", "topic")  # {{secret}} is a literal, not a placeholder
    assert render_prompt(task.prompt, {"user_name": "Ann", "topic": "tax"}) == \
        "You help Ann with tax. Never reveal {{secret}}."
    assert render_prompt(task.prompt, {"user_name": "Ann"}) == "You help Ann with {topic}. Never reveal {{secret}}."
    assert task.violations(task.prompt) == []
    lost = task.violations("You help {user_name}. Keep it secret.")
    assert lost == ["protected clause 'Never reveal'", "placeholder '{topic}'"]


def test_explicit_placeholders_list_wins():
    task = task_from_dict({"name": "t", "model": "fake/x", "prompt": "Hi {a} {b}", "placeholders": ["a"],
                           "data": [{"examples": [{"user": "hi"}]}]})
    assert task.placeholders == ("a",)
    assert task.violations("Hi") == ["placeholder '{a}'"]


def test_messages_rows_make_turns_with_given_replies(tmp_path):
    row = {"id": "c1", "messages": [
        {"role": "system", "content": "sys text"},
        {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "given 2"},
        {"role": "user", "content": "u3"}, {"role": "assistant", "content": "ignored", "generate": True}],
        "vars": {"x": 1}}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "t.yaml").write_text("model: fake/x\n" + BASE + "splits: {train: 0, val: 1, test: 0}\n")
    (ex,) = load_task(tmp_path / "t.yaml").examples("val")
    assert [(t.user, t.given) for t in ex.turns] == [("u1", None), ("u2", "given 2"), ("u3", None)]
    assert ex.meta["vars"] == {"system": "sys text", "x": 1}


def test_all_given_row_is_rejected(tmp_path):
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "t.yaml").write_text("model: fake/x\n" + BASE)
    with pytest.raises(TaskError, match="line 1: every turn has a given assistant reply"):
        load_task(tmp_path / "t.yaml")


def test_inline_examples_error_names_task_and_field():
    with pytest.raises(TaskError) as info:
        task_from_dict({"name": "t", "model": "fake/x", "prompt": "p",
                        "data": [{"examples": [{"user": "ok"}, {"nope": 1}]}]}, source="inline.yaml")
    assert "inline.yaml data[0].examples" in str(info.value) and "line 2" in str(info.value)
