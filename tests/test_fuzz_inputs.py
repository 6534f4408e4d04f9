"""Bad-input fuzzing: malformed task files and datasets must each give one TaskError line, never a traceback.

Hypothesis generates random YAML structures, wrong types in every field of a valid task, missing fields, garbage
and non-UTF-8 bytes, huge numbers, negative budgets, bad check specs, and large JSONL datasets with bad rows at
random positions. Everything goes through `load_task` in-process (fast, many examples); a few inputs also go
through `promptlearn eval` in a subprocess, which must exit 2 with one `promptlearn: error:` line on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptlearn.errors import PromptlearnError, TaskError
from promptlearn.task import load_task, task_from_dict

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"

# derandomize: the same examples on every run (CI stays deterministic); raise max_examples locally to dig deeper
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

GOOD_ROW = {"user": "hello there"}


def valid_task() -> dict[str, Any]:
    """A task using every top-level field, so that each one can be broken."""
    return {
        "name": "fuzz",
        "description": "a task to break",
        "model": {"name": "fake/target", "temperature": 0.0, "max_tokens": 16, "seed": 0, "timeout": 5,
                  "retries": 1, "concurrency": 2, "guidance": 1.0, "params": {"top_p": 1.0}},
        "proposer": "fake/proposer",
        "judge": {"name": "fake/judge"},
        "prompt": "Be brief. Answer about {topic}.",
        "protected": ["Be brief."],
        "placeholders": ["topic"],
        "data": [{"file": "rows.jsonl", "format": "jsonl", "limit": 100, "offset": 0,
                  "checks": [{"type": "contains", "value": "a"}], "meta": {"vars": {"topic": "ships"}}},
                 {"examples": [{"id": "inline-1", "user": "hi"}], "split": "test"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}, {"type": "max_words", "value": 50}],
        "objective": {"primary": "score", "constraints": {"broken": "<= 2"}, "weights": {"ahoy": 2.0}},
        "budget": {"max_calls": 100, "max_usd": 1.0, "max_tokens": 10000, "max_seconds": 60},
        "optimizer": {"name": "evolve", "crossover_rate": 0.2},
        "cache": "cache.sqlite",
    }


def leaf_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into the task (mappings and lists), so a mutation can hit any field at any depth."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaf_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaf_paths(v, prefix + (i,))
    return out


PATHS = leaf_paths(valid_task())

# Numbers that break naive parsers: beyond int64, beyond float, beyond Python's int<->str digit limit.
BIG_NUMBERS = ["9" * 5000, "-" + "9" * 5000, "1e999", "-1e999", "18446744073709551617", "-1", "-0.0001",
               "0x7fffffffffffffff", ".nan", ".inf", "-.inf", "1_000_000_000_000_000_000_000"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", " ", "fake/x", "jsonl", "sysbench", "train", "<= 2", "starts_with", "rows.jsonl", ".",
                     "..", "/", "\x00", "a\nb", "\r", "{topic}", "max_calls", "-1", "1e999", "NaN"]),
    st.sampled_from([f"ZZNUM{i}" for i in range(len(BIG_NUMBERS))]),  # replaced by a raw number token
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["name", "type", "file", "user", "messages", "role",
                                                        "content", "checks", "value", "model", "data"]))
values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(keys, ch, max_size=4),
                      max_leaves=10)


def to_yaml(doc: Any) -> str:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return re.sub(r"ZZNUM(\d+)", lambda m: BIG_NUMBERS[int(m.group(1))], text)


def fresh_dir(tmp_path: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp_path))


def write_task(d: Path, doc: Any = None, *, raw: bytes | None = None, rows: list[str] | None = None) -> Path:
    (d / "rows.jsonl").write_text("\n".join(rows if rows is not None else [json.dumps(GOOD_ROW)] * 5) + "\n")
    path = d / "task.yaml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(to_yaml(doc), encoding="utf-8")
    return path


def load_or_error(path: Path, *, names: tuple[str, ...] = ()) -> TaskError | None:
    """load_task must succeed or raise one TaskError line naming the file (task or data) and carrying a fix."""
    try:
        load_task(path)
    except TaskError as e:
        msg = str(e)
        assert len(msg.splitlines()) == 1 and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
        assert "Traceback" not in msg
        assert "(fix: " in msg, f"no fix in: {msg}"
        files = (str(path), str(path.parent / "rows.jsonl"))
        assert any(f in msg for f in files), f"names no file: {msg}"
        for n in names:
            assert n in msg, f"{n!r} not named in: {msg}"
        return e
    except Exception as e:  # noqa: BLE001 - exactly what this test is hunting for
        pytest.fail(f"load_task raised {type(e).__name__} instead of TaskError: {str(e)[:300]}")
    return None


def test_valid_task_loads(tmp_path):
    task = load_task(write_task(tmp_path, valid_task()))
    assert len(task.examples("all")) == 6


# ---- task files ---------------------------------------------------------------------------------------------


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def _delete(doc: Any, path: tuple) -> None:
    for p in path[:-1]:
        doc = doc[p]
    del doc[path[-1]]


@FUZZ
@given(path=st.sampled_from(PATHS), value=values, how=st.sampled_from(["replace", "delete", "extra"]))
@example(path=("budget", "max_calls"), value=-5, how="replace")
@example(path=("budget", "max_usd"), value=-0.5, how="replace")
@example(path=("budget", "max_calls"), value="ZZNUM0", how="replace")
@example(path=("model", "max_tokens"), value="ZZNUM0", how="replace")
@example(path=("splits", "train"), value="ZZNUM9", how="replace")
@example(path=("data", 0, "file"), value=".", how="replace")
@example(path=("data", 0, "file"), value="x" * 5000, how="replace")
@example(path=("prompt",), value={"file": "."}, how="replace")
@example(path=("prompt",), value={"file": "rows.jsonl" * 600}, how="replace")
@example(path=("checks", 0), value={"type": "regex", "pattern": "("}, how="replace")
@example(path=("checks", 0), value={"type": "max_words", "value": "many"}, how="replace")
@example(path=("checks", 0, "type"), value="starts_wth", how="replace")
@example(path=("data", 0, "checks", 0), value={"type": "python", "function": "no.such:module"}, how="replace")
@example(path=("data", 0, "format"), value="sysbench", how="replace")
@example(path=("data", 0, "format"), value="sys_ifeval", how="replace")
@example(path=("data", 0, "format"), value="tensortrust_hijacking", how="replace")
@example(path=("data", 1, "examples", 0), value={"messages": ["hi"]}, how="replace")
@example(path=("model",), value="\r", how="extra")
def test_mutated_task_field(tmp_path, path, value, how):
    """Any field replaced by any YAML value, deleted, or given an unknown sibling: load or one TaskError."""
    doc = valid_task()
    if how == "replace":
        _set(doc, path, value)
    elif how == "delete":
        _delete(doc, path)
    else:
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        if not isinstance(parent, dict):
            return
        parent[f"unknown_{path[-1]}" if not isinstance(value, str) or value in parent else value] = value
    d = fresh_dir(tmp_path)
    err = load_or_error(write_task(d, doc))
    if err is not None and not str(path[0]).startswith("data") and not (how == "extra" and len(path) == 1):
        assert str(path[0]) in str(err) or "line " in str(err), f"{path[0]} not named in: {err}"


TASK = {"name": "t", "model": "fake/x", "prompt": "p"}


@FUZZ
@given(doc=values)
@example(doc={**TASK, "data": [{"examples": [{"messages": [{"role": "robot", "content": "x"}]}]}]})
@example(doc={**TASK, "data": [{"examples": [{"messages": [{"role": "user"}]}]}]})
@example(doc={**TASK, "data": [{"file": "rows.jsonl", "format": "sysbench"}]})
@example(doc={**TASK, "data": [{"examples": [{"messages": []}], "format": "sys_ifeval"}]})
@example(doc={**TASK, "data": [{"examples": [{"messages": [{}], "prompt_infos": []}], "format": "sysbench"}]})
@example(doc={**TASK, "data": [{"examples": [{"user": "a"}]}], "splits": {"train": ".nan"}})
@example(doc={"a": "ZZNUM0"})
def test_random_yaml_structure(tmp_path, doc):
    """A whole task file that is some random YAML value: load or one TaskError."""
    load_or_error(write_task(fresh_dir(tmp_path), doc))


@FUZZ
@given(raw=st.binary(max_size=400))
@example(raw=b"\xff\xfe\x00n\x00a\x00m\x00e")
@example(raw=b"name: t\nmodel: fake/x\nprompt: caf\xe9\n")
@example(raw=b"a: " + b"[" * 20000 + b"]" * 20000)
@example(raw=b"a: " + b"{x: " * 5000 + b"}" * 5000)
@example(raw=b"&a [*a, *a]")
@example(raw=b"a: !!python/object:os.system 'true'")
@example(raw=b"a: 9" + b"9" * 5000)
@example(raw=b"\x00")
@example(raw=b"\t- x")
def test_garbage_task_bytes(tmp_path, raw):
    """Random bytes (and non-UTF-8, NUL, deep nesting, python tags, huge numbers) as the task file."""
    err = load_or_error(write_task(fresh_dir(tmp_path), raw=raw))
    assert err is not None or yaml.safe_load(raw.decode("utf-8")) is not None


@FUZZ
@given(pos=st.integers(min_value=0, max_value=10_000), bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82",
                                                                             b"\x80", b"\xed\xa0\x80"]))
def test_non_utf8_task_file(tmp_path, pos, bad):
    text = to_yaml(valid_task()).encode("utf-8")
    pos %= len(text) + 1
    err = load_or_error(write_task(fresh_dir(tmp_path), raw=text[:pos] + bad + text[pos:]))
    assert err is not None and "UTF-8" in str(err)


def test_task_path_is_a_directory(tmp_path):
    load_or_error(tmp_path)  # the message names the path given


# ---- datasets -----------------------------------------------------------------------------------------------

# A bad row -> (JSONL line, substring the message must contain besides the file and line)
BAD_ROWS: dict[str, tuple[str, str]] = {
    "truncated_json": ('{"user": "hi", "checks": [', "not valid JSON"),
    "not_json": ("this is not json", "not valid JSON"),
    "python_dict": ("{'user': 'hi'}", "not valid JSON"),
    "trailing_comma": ('{"user": "hi",}', "not valid JSON"),
    "huge_int": ('{"user": "hi", "id": ' + "9" * 5000 + "}", ""),
    "deep_nesting": ('{"user": "hi", "meta": ' + "[" * 50000 + "]" * 50000 + "}", ""),
    "number_row": ("42", "JSON object"),
    "string_row": ('"hello"', "JSON object"),
    "list_row": ('[{"user": "hi"}]', "JSON object"),
    "null_row": ("null", "JSON object"),
    "no_user": ('{"id": "x", "question": "hi"}', "'messages' or 'user'"),
    "user_number": ('{"user": 5}', "user"),
    "user_list_of_numbers": ('{"user": [1, 2]}', "user"),
    "messages_string": ('{"messages": "hi"}', "messages"),
    "message_not_object": ('{"messages": ["hi"]}', ""),
    "wrong_role": ('{"messages": [{"role": "robot", "content": "beep"}]}', "role"),
    "missing_role": ('{"messages": [{"content": "beep"}]}', "role"),
    "missing_content": ('{"messages": [{"role": "user"}]}', "content"),
    "content_number": ('{"messages": [{"role": "user", "content": 3}]}', "content"),
    "assistant_first": ('{"messages": [{"role": "assistant", "content": "hi"}]}', "assistant"),
    "nothing_to_generate": ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
                            "nothing to generate"),
    "empty_messages": ('{"messages": []}', "user message"),
    "checks_string": ('{"user": "hi", "checks": "starts_with"}', "checks"),
    "check_not_object": ('{"user": "hi", "checks": [5]}', "check"),
    "check_unknown_type": ('{"user": "hi", "checks": [{"type": "strats_with"}]}', "starts_with"),
    "check_bad_regex": ('{"user": "hi", "checks": [{"type": "regex", "pattern": "(["}]}', "check"),
    "check_bad_param": ('{"user": "hi", "checks": [{"type": "starts_with", "valu": "x"}]}', "check"),
    "turn_checks_number": ('{"messages": [{"role": "user", "content": "a", "checks": 7}]}', ""),
    "meta_string": ('{"user": "hi", "meta": "abc"}', ""),
    "vars_list": ('{"user": "hi", "vars": [1]}', ""),
    "meta_vars_string": ('{"user": "hi", "meta": {"vars": "x"}}', ""),
    "duplicate_id": ('{"id": "row-3", "user": "again"}', "duplicate example id"),
}


def dataset(n: int, bad_at: list[int], bad: list[str]) -> list[str]:
    """n good rows with ids row-<line>; the given (1-based) lines replaced by bad ones; some blank lines."""
    lines = [json.dumps({"id": f"row-{i}", "user": f"question {i}", "checks": [{"type": "contains", "value": "a"}]})
             for i in range(1, n + 1)]
    for pos, text in zip(bad_at, bad):
        lines[pos - 1] = text
    return lines


DATA_TASK = {"name": "data", "model": "fake/x", "prompt": "p", "data": [{"file": "rows.jsonl"}]}


@FUZZ
@given(n=st.integers(min_value=5, max_value=3000), data=st.data())
def test_bad_row_in_large_dataset_names_its_line(tmp_path, n, data):
    # bad rows go on distinct lines 4..n, so at most n - 3 of them (n=5 once drew three kinds for two lines)
    kinds = data.draw(st.lists(st.sampled_from(sorted(BAD_ROWS)), min_size=1, max_size=min(3, n - 3)))
    positions = sorted(data.draw(st.lists(st.integers(min_value=4, max_value=n), min_size=len(kinds),
                                          max_size=len(kinds), unique=True)))
    lines = dataset(n, positions, [BAD_ROWS[k][0] for k in kinds])
    d = fresh_dir(tmp_path)
    err = load_or_error(write_task(d, DATA_TASK, rows=lines))
    assert err is not None, f"rows {kinds} at lines {positions} were accepted"
    assert str(d / "rows.jsonl") in str(err)
    # Unparsable lines are found before rows that parse but are wrong, so it is one bad line, not always the first.
    line = int(re.search(r"rows\.jsonl: line (\d+):", str(err)).group(1))
    assert line in positions, f"{kinds} at {positions}, but the error names line {line}: {err}"
    kind = kinds[positions.index(line)]
    assert BAD_ROWS[kind][1] in str(err), f"{kind}: {err}"


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_each_bad_row_kind(tmp_path, kind):
    lines = dataset(50, [17], [BAD_ROWS[kind][0]])
    err = load_or_error(write_task(tmp_path, DATA_TASK, rows=lines))
    assert err is not None and "line 17:" in str(err) and BAD_ROWS[kind][1] in str(err), err


@FUZZ
@given(n=st.integers(min_value=2, max_value=2000), data=st.data())
def test_non_utf8_dataset_names_its_line(tmp_path, n, data):
    line = data.draw(st.integers(min_value=1, max_value=n))
    bad = data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x80abc", b"\xe9"]))
    rows = [json.dumps({"id": f"r{i}", "user": f"q {i}"}).encode() for i in range(1, n + 1)]
    rows[line - 1] = rows[line - 1][:10] + bad + rows[line - 1][10:]
    d = fresh_dir(tmp_path)
    path = write_task(d, DATA_TASK)
    (d / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    err = load_or_error(path)
    assert err is not None and f"line {line}" in str(err) and "UTF-8" in str(err), err


@pytest.mark.parametrize("fmt", ["sys_ifeval", "tensortrust_hijacking", "tensortrust_helpful", "sysbench"])
@pytest.mark.parametrize("row", [{}, {"messages": []}, {"messages": [{"role": "system"}]}, {"messages": "x"},
                                 {"messages": [{"content": "s"}, {"content": "u"}], "instruction_id_list": 5,
                                  "kwargs": [None]},
                                 {"messages": [{"role": "user", "content": "u"}], "prompt_infos": [],
                                  "system_prompt": "s"}])
def test_importer_formats_with_wrong_rows(tmp_path, fmt, row):
    doc = {**DATA_TASK, "data": [{"file": "rows.json" if fmt == "sysbench" else "rows.jsonl", "format": fmt}]}
    path = write_task(tmp_path, doc, rows=[json.dumps(row)])
    (tmp_path / "rows.json").write_text(json.dumps([row]))
    try:
        load_task(path)
    except TaskError as e:
        assert len(str(e).splitlines()) == 1 and "line " in str(e) and "(fix: " in str(e), e
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{fmt} row {row}: {type(e).__name__}: {e}")


@pytest.mark.parametrize("what", ["directory", "fifo_like_dir_in_prompt"])
def test_paths_that_are_directories(tmp_path, what):
    doc = valid_task()
    if what == "directory":
        (tmp_path / "sub").mkdir()
        doc["data"][0]["file"] = "sub"
    else:
        doc["prompt"] = {"file": "."}
    err = load_or_error(write_task(tmp_path, doc))
    assert err is not None and ("data[0].file" in str(err) or "prompt.file" in str(err)), err


# ---- the CLI ------------------------------------------------------------------------------------------------


def cli_eval(task: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMPTLEARN), "eval", str(task), "--json"], capture_output=True, text=True,
                          timeout=120, cwd=task.parent)


CLI_CASES: dict[str, Any] = {
    "garbage_bytes": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xff",
    "non_utf8": b"name: t\nmodel: fake/x\nprompt: caf\xe9\ndata: [{file: rows.jsonl}]\n",
    "deep_yaml": b"a: " + b"[" * 20000 + b"]" * 20000,
    "negative_budget": {**DATA_TASK, "budget": {"max_calls": -1}},
    "huge_number": {**DATA_TASK, "budget": {"max_calls": "ZZNUM0"}},
    "wrong_type": {**DATA_TASK, "model": {"name": "fake/x", "temperature": [1]}},
    "missing_field": {k: v for k, v in DATA_TASK.items() if k != "prompt"},
    "bad_check": {**DATA_TASK, "checks": [{"type": "regex", "pattern": "(["}]},
    "data_is_dir": {**DATA_TASK, "data": [{"file": "."}]},
    "bad_row_3000": ("rows", dataset(3000, [2718], ['{"messages": [{"role": "robot", "content": "x"}]}'])),
    "message_not_object": ("rows", dataset(100, [42], ['{"messages": ["hi"]}'])),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_eval_malformed_exits_2_with_one_line(tmp_path, case):
    spec = CLI_CASES[case]
    if isinstance(spec, bytes):
        path = write_task(tmp_path, raw=spec)
    elif isinstance(spec, tuple):
        path = write_task(tmp_path, DATA_TASK, rows=spec[1])
    else:
        path = write_task(tmp_path, spec)
    with pytest.raises(PromptlearnError) as info:  # the same message in-process
        load_task(path)
    proc = cli_eval(path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptlearn: error:"), proc.stderr
    assert lines[0] == f"promptlearn: error: {info.value}"
    if case.startswith(("bad_row", "message_not")):
        assert f"line {2718 if case == 'bad_row_3000' else 42}:" in lines[0]


@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=st.sampled_from([[[1]], {"x": [None]}, "ZZNUM0", -7, "\r"]))
def test_cli_eval_on_fuzzed_tasks(tmp_path, path, value):
    """A few fuzzed tasks through the CLI: whenever load_task refuses one, the CLI says the same in one line."""
    doc = valid_task()
    _set(doc, path, value)
    d = fresh_dir(tmp_path)
    task = write_task(d, doc)
    try:
        load_task(task)
        return  # still valid: nothing to check here (the CLI would call the model)
    except TaskError as e:
        expected = f"promptlearn: error: {e}"
    proc = cli_eval(task)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [expected]


# ---- inputs that load but cannot run: empty splits, missing keys, proposals that cost nothing ----------------
# Each used to hang, report a score of nothing, or retry for 30 s; each must now be one line and exit 2 before
# a run folder exists or a model call is made.

ONE_EXAMPLE = {"name": "tiny", "model": "fake/x", "prompt": "Start with Ahoy.",
               "data": [{"examples": [{"id": "only", "user": "hi"}]}],
               "checks": [{"type": "starts_with", "value": "Ahoy"}]}  # 0.4/0.3/0.3 of one: train 0, val 0, test 1
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def cli(args: list[str], cwd: Path, *, drop: tuple[str, ...] = (), timeout: float = 90) -> subprocess.CompletedProcess:
    """The real console script; remote calls (if any slipped through) go to a dead local proxy, never out."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in drop} | NO_NETWORK
    return subprocess.run([str(PROMPTLEARN), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-300:], proc.stderr[-600:])
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("promptlearn: error: "), line
    return line


def test_cli_optimize_with_one_example_exits_2_before_a_run_folder(tmp_path):
    """It used to spin with no output and no model call until killed (val empty: every candidate scored 0)."""
    task = write_task(tmp_path, ONE_EXAMPLE)
    proc = cli(["optimize", str(task), "--run-dir", str(tmp_path / "run"), "--budget-calls", "20"], tmp_path)
    line = one_error_line(proc)
    assert f"{task}: splits: the train and val splits have no examples (train 0, val 0, test 1)" in line, line
    assert "add examples or change `splits:`" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("split", ["val", "train"])
def test_cli_eval_on_an_empty_split_exits_2(tmp_path, split):
    """It used to print score 0.0 on n_examples 0 and exit 0."""
    task = write_task(tmp_path, ONE_EXAMPLE)
    line = one_error_line(cli(["eval", str(task), "--split", split, "--json"], tmp_path))
    assert f"splits: the {split} split has no examples (train 0, val 0, test 1)" in line, line
    assert f"so that {split} gets at least one" in line


def test_cli_check_on_an_empty_val_exits_2(tmp_path):
    """`check --split val` gated a build on zero examples (score 0, PASS without --min-score, exit 0)."""
    task = write_task(tmp_path, ONE_EXAMPLE)
    (tmp_path / "app.yaml").write_text("assistant:\n  system_prompt: Start with Ahoy!\n")
    line = one_error_line(cli(["check", str(task), "--prompt-from", f"{tmp_path / 'app.yaml'}:assistant.system_prompt",
                               "--split", "val"], tmp_path))
    assert "the val split has no examples (train 0, val 0, test 1)" in line, line


def test_cli_optimize_without_the_provider_key_exits_2_at_once(tmp_path):
    """`openai/gpt-4o-mini` without OPENAI_API_KEY was retried 7 times over 30 s as a server error, exit 1."""
    doc = {**valid_task(), "model": {"name": "openai/gpt-4o-mini", "retries": 0, "timeout": 5}}
    del doc["proposer"], doc["judge"]
    task = write_task(tmp_path, doc)
    start = time.monotonic()
    proc = cli(["optimize", str(task), "--run-dir", str(tmp_path / "run")], tmp_path, drop=("OPENAI_API_KEY",))
    line = one_error_line(proc)
    assert line == (f"promptlearn: error: {task}: no key for openai/gpt-4o-mini: set OPENAI_API_KEY or name a "
                    "variable in model.api_key_env")
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - start < 60


def test_empty_test_split_is_refused_before_any_call(tmp_path, fake_lm):
    """train and val were fine, so the whole search ran and spent its budget before finding nothing to test."""
    from promptlearn.run import optimize

    task = task_from_dict({**ONE_EXAMPLE, "data": [{"examples": [{"user": f"q{i}"} for i in range(6)]}],
                           "splits": {"train": 0.5, "val": 0.5, "test": 0.0}})
    with pytest.raises(TaskError, match=r"splits: the test split has no examples \(train 3, val 3, test 0\)"):
        optimize(task, budget=30, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert fake_lm.calls == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("api", ["evaluate", "check_prompt"])
def test_api_refuses_an_empty_split(fake_lm, api):
    from promptlearn.engine import evaluate
    from promptlearn.gate import check_prompt

    task = task_from_dict(ONE_EXAMPLE)
    with pytest.raises(TaskError, match=r"the val split has no examples \(train 0, val 0, test 1\)"):
        evaluate(task, split="val") if api == "evaluate" else check_prompt(task, "Ahoy!", "val")
    assert fake_lm.calls == 0
    assert (evaluate(task, split="test") if api == "evaluate" else check_prompt(task, "Ahoy!", "test")).score == 0.0


JUDGED = [{"type": "checklist", "criteria": ["The reply is polite."]}]


@pytest.mark.parametrize("role", ["proposer", "judge"])
def test_a_proposer_or_judge_without_its_key_is_refused_before_any_call(tmp_path, fake_lm, role):
    from promptlearn.engine import evaluate
    from promptlearn.run import optimize

    plain = {**ONE_EXAMPLE, "data": [{"examples": [{"user": f"q{i}"} for i in range(6)]}],
             role: "anthropic/claude-haiku-4-5"}
    judged = {**plain, "checks": plain["checks"] + JUDGED}
    expected = f"no key for anthropic/claude-haiku-4-5: set ANTHROPIC_API_KEY or name a variable in {role}.api_key_env"
    with pytest.raises(TaskError, match=re.escape(expected)):
        optimize(task_from_dict(judged), budget=30, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert fake_lm.calls == 0 and not (tmp_path / "run").exists()
    # eval never calls the proposer; the judge only for a check that needs a model (an unset judge is the proposer)
    with pytest.raises(TaskError, match=re.escape(expected)):
        evaluate(task_from_dict(judged), split="val")
    assert fake_lm.calls == 0
    assert evaluate(task_from_dict(plain), split="val").complete and fake_lm.calls == 2


@pytest.mark.parametrize("model, refused", [
    ({"name": "openai/gpt-4o-mini"}, True),
    ({"name": "gpt-4o-mini"}, True),
    ({"name": "openai/gpt-4o-mini", "api_base": "https://api.openai.com/v1"}, True),
    ({"name": "openai/qwen", "api_base": "http://127.0.0.1:8000/v1"}, False),  # a self-hosted server
    ({"name": "openai/gpt-4o-mini", "api_key_env": "MY_KEY"}, False),  # the call names MY_KEY itself
    ({"name": "local/smollm2"}, False),
    ({"name": "ollama/llama3"}, False),  # OLLAMA_API_BASE has a default: not a key
    ({"name": "fake/x"}, False),
])
def test_which_models_need_a_key_in_the_environment(model, refused):
    task = task_from_dict({**ONE_EXAMPLE, "model": model})
    if refused:
        with pytest.raises(TaskError,
                           match="no key for .*: set OPENAI_API_KEY or name a variable in model.api_key_env"):
            task.require("test")
    else:
        task.require("test")


class _Spinner:
    """An optimizer that proposes forever at no cost: the seed again (a duplicate), or prompts that drop the
    protected clause (each new, each rejected). It gives up on its own only after 5,000 proposals."""

    name = "spinner-test"
    kind = "duplicate"

    def run(self, ctx):
        for i in range(5000):
            prompt = ctx.task.prompt if self.kind == "duplicate" else f"Say hi, variant {i}."
            ctx.propose(prompt, (ctx.seed_candidate.id,), "spin")


@pytest.mark.parametrize("kind", ["duplicate", "rejected"])
def test_proposals_that_cost_nothing_stop_the_run(tmp_path, fake_lm, kind):
    from promptlearn.optimizers import _PLUGINS, register_optimizer
    from promptlearn.run import optimize

    task = task_from_dict({**ONE_EXAMPLE, "protected": ["Ahoy"],
                           "data": [{"examples": [{"user": f"q{i}"} for i in range(10)]}]})
    register_optimizer(type("Spinner", (_Spinner,), {"kind": kind}))
    try:
        res = optimize(task, "spinner-test", run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    finally:
        _PLUGINS.pop("spinner-test", None)
    assert res.stop_reason == "100 proposals in a row made no model call and scored nothing new"
    assert res.seed.test is not None and res.best.id == res.seed.id  # the run finished: seed scored on test
    assert fake_lm.calls == 3 + 3  # seed on val, seed on test: nothing else
    assert res.candidates == (1 if kind == "duplicate" else 101)


# ---- nothing starts before the input is checked (issue 20) ---------------------------------------------------
# Each of these used to create a run folder, retry for seconds, or end in a traceback; each is now refused (or
# warned about) before a run folder exists or a model call is made.

TEN = {**ONE_EXAMPLE, "data": [{"examples": [{"user": f"q{i}"} for i in range(10)]}]}


def test_cli_optimize_unknown_optimizer_leaves_no_run_folder(tmp_path):
    task = write_task(tmp_path, TEN)
    line = one_error_line(cli(["optimize", str(task), "--optimizer", "gepa"], tmp_path))
    assert "unknown optimizer 'gepa'" in line and "dspy, evolve, mutate, optuna" in line, line
    assert not (tmp_path / "runs").exists()


def test_cli_optimize_unknown_option_names_the_known_ones(tmp_path):
    """`-o nosuch=1` was a TypeError traceback (exit 1) after the run folder was made."""
    task = write_task(tmp_path, TEN)
    line = one_error_line(cli(["optimize", str(task), "-o", "nosuch=1", "-o", "minibatch=4"], tmp_path))
    assert "optimizer 'evolve' has no option 'nosuch'" in line, line
    for known in ("crossover_rate", "operators", "max_failed_proposals", "minibatch", "patience", "test_front"):
        assert known in line, (known, line)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, options, match", [
    ("gepa", {}, "unknown optimizer 'gepa'"),
    ("evolve", {"nosuch": 1}, "optimizer 'evolve' has no option 'nosuch'"),
    ("mutate", {"crossover_rate": 0.5}, "optimizer 'mutate' has no option 'crossover_rate'.*paraphrase_every"),
    ("evolve", {"operators": ["nosuch"]}, "unknown operators"),  # the optimizer's own check, before the folder
])
def test_api_checks_optimizer_and_options_before_a_run_folder(tmp_path, fake_lm, name, options, match):
    from promptlearn.run import optimize

    with pytest.raises(TaskError, match=match):
        optimize(task_from_dict(TEN), name, run_dir=tmp_path / "run", options=options)
    assert fake_lm.calls == 0 and not (tmp_path / "run").exists()


def test_api_option_from_the_task_file_is_checked_too(tmp_path, fake_lm):
    from promptlearn.run import optimize

    with pytest.raises(TaskError, match="optimizer 'evolve' has no option 'crossover'"):
        optimize(task_from_dict({**TEN, "optimizer": {"name": "evolve", "crossover": 0.5}}), run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cli_a_local_gguf_that_does_not_exist_exits_2_at_once(tmp_path):
    """`model: local/nonexistent` was retried for 30 s (an APIConnectionError per attempt), then exit 1."""
    task = write_task(tmp_path, {**TEN, "model": "local/nonexistent"})
    start = time.monotonic()
    for args in (["eval", str(task)], ["optimize", str(task)]):
        line = one_error_line(cli(args, tmp_path))
        assert "model.name: local/nonexistent: GGUF file 'nonexistent' not found" in line, line
    assert time.monotonic() - start < 20 and not (tmp_path / "runs").exists()


def test_a_missing_gguf_for_the_proposer_is_refused_by_require(tmp_path):
    task = task_from_dict({**TEN, "proposer": {"name": f"local/{tmp_path}/none.gguf"}})
    task.require("val")  # eval never calls the proposer
    with pytest.raises(TaskError, match=r"proposer.name: local/.*none.gguf: GGUF file .* not found"):
        task.require("val", proposer=True)


def _refused_url() -> str:
    import socket

    with socket.socket() as s:  # a port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_cli_says_so_while_retrying_a_refused_connection(tmp_path, transport):
    """A server that refused every connection gave 22 s of silence, then one error line."""
    model = {"name": "openai/x", "api_base": _refused_url(), "retries": 2, "transport": transport,
             "api_key_env": "MY_TEST_KEY"}
    task = write_task(tmp_path, {**TEN, "model": model})
    import os

    proc = subprocess.run([str(PROMPTLEARN), "eval", str(task)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "MY_TEST_KEY": "sk-secretsecret123"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    notes = [ln for ln in lines if "retrying" in ln]
    assert len(notes) == 2, lines  # one per backoff (the 2 concurrent calls share a line), then the error
    for i, note in enumerate(notes, 1):
        assert note.startswith("promptlearn: openai/x: cannot reach the server (") and "onnect" in note, note
        assert note.endswith(f"); retrying ({i} of 2) in {note.rsplit(' in ', 1)[1]}"), note
    assert lines[-1].startswith("promptlearn: error: openai/x: failed after 3 attempts")
    assert "secretsecret" not in proc.stderr


def test_library_users_get_no_retry_lines_unless_they_ask(tmp_path, capsys):
    from promptlearn import lm
    from promptlearn.engine import evaluate
    from promptlearn.errors import ModelError

    task = task_from_dict({**TEN, "model": {"name": "openai/x", "api_base": _refused_url(), "retries": 1}})
    with pytest.raises(ModelError):
        evaluate(task, split="val")
    assert capsys.readouterr().err == ""
    seen: list[str] = []
    lm.set_retry_notice(seen.append)
    try:
        with pytest.raises(ModelError):
            evaluate(task, split="val", use_cache=False)
    finally:
        lm.set_retry_notice(None)
    assert len(seen) == 1 and seen[0].startswith("openai/x: cannot reach the server"), seen


@pytest.mark.parametrize("value", ["60", "-0.1", "1.5", "nan"])
def test_cli_refuses_a_score_threshold_outside_0_1(tmp_path, value):
    """`check --min-score 60` was accepted: every prompt failed the gate (scores are 0-1)."""
    task = write_task(tmp_path, TEN)
    (tmp_path / "app.yaml").write_text("assistant:\n  system_prompt: Start with Ahoy!\n")
    ref = f"{tmp_path / 'app.yaml'}:assistant.system_prompt"
    for args in (["check", str(task), "--prompt-from", ref, "--min-score", value],
                 ["eval", str(task), "--min-score", value]):
        line = one_error_line(cli(args, tmp_path))
        assert "--min-score" in line and "scores are between 0 and 1" in line, line


def test_api_refuses_a_score_threshold_outside_0_1(fake_lm):
    from promptlearn.errors import ConfigError
    from promptlearn.gate import check_prompt

    with pytest.raises(ConfigError, match="min_score must be between 0 and 1 .scores are 0-1., got 60"):
        check_prompt(task_from_dict(TEN), "Ahoy!", "test", min_score=60)
    assert fake_lm.calls == 0


def test_cli_warns_on_a_task_that_measures_nothing(tmp_path):
    """An empty prompt, a protected clause the seed lacks and no checks ran silently (every score 1.000)."""
    from promptlearn.testing_server import LoopbackServer

    with LoopbackServer() as srv:
        doc = {**TEN, "prompt": " ", "protected": ["Never swear."], "checks": [],
               "model": {"name": "openai/loopback", "api_base": srv.base_url}}
        proc = subprocess.run([str(PROMPTLEARN), "eval", str(write_task(tmp_path, doc)), "--json"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # stdout stays machine-readable
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "promptlearn: warning: prompt: the seed prompt is empty",
        "promptlearn: warning: protected: 'Never swear.' is not in the seed prompt: every candidate must keep it "
        "verbatim, so the seed is the only prompt without it",
        "promptlearn: warning: checks: the task has no checks: every reply scores 1.0, so every prompt ties",
    ], lines


def test_api_warns_on_splits_too_small_for_acceptance(tmp_path, fake_lm):
    from promptlearn.errors import TaskWarning
    from promptlearn.run import optimize

    task = task_from_dict({**TEN, "data": [{"examples": [{"user": f"q{i}"} for i in range(4)]}],
                           "splits": {"train": 0.5, "val": 0.25, "test": 0.25}})
    assert task.warnings() == []  # eval and check compare nothing: small splits are fine there
    with pytest.warns(TaskWarning) as got:
        optimize(task, budget=20, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert [str(w.message) for w in got if w.category is TaskWarning] == [
        "splits: val has 1 example: accepting a prompt over another rests on it alone; give val at least 5",
        "splits: test has 1 example: the held-out score rests on it alone; give test at least 5"]


# ---- resume keeps the run's budget; a finished run stays finished -------------------------------------------


@pytest.fixture
def finished_run(tmp_path):
    """A run of the contract task stopped by its 60-call budget (status finished)."""
    from promptlearn.run import optimize
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    run, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FakeLM(wording_sensitive_responder):
        res = optimize(contract_task(max_calls=60), seed=3, run_dir=run, cache_path=cache)
    assert "max_calls" in res.stop_reason
    return run, cache, res


def _status(run: Path) -> str:
    from promptlearn.store import SQLiteRunStore

    return SQLiteRunStore(run, create=False).get_meta("status")


@pytest.mark.parametrize("how", ["argument", "task file"])
def test_resume_with_another_budget_is_refused(finished_run, how):
    """The README says resume takes the same budget; another one silently extended the run."""
    from promptlearn.errors import RunError
    from promptlearn.run import optimize
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    run, cache, res = finished_run
    task, budget = (contract_task(max_calls=60), 120) if how == "argument" else (contract_task(max_calls=120), None)
    with FakeLM(wording_sensitive_responder) as fake:
        with pytest.raises(RunError) as info:
            optimize(task, budget=budget, resume=run, cache_path=cache)
        assert fake.calls == 0
        assert str(info.value) == ("run run has the budget max_calls=60; --resume continues it with the same budget "
                                   "(asked: max_calls=120): resume without a new budget, or add --extend-budget to "
                                   "continue it with max_calls=120")
        again = optimize(contract_task(max_calls=60), resume=run, cache_path=cache)  # same budget: fine
    assert fake.calls == 0 and again.best.prompt == res.best.prompt and _status(run) == "finished"


def test_resume_without_a_budget_keeps_the_runs_own(tmp_path):
    """A run started with --budget-calls and resumed without it ran with the task's budget (here: none)."""
    from promptlearn.run import optimize
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    task = task_from_dict({**contract_task().spec.model_dump(exclude_none=True), "budget": {}})

    def capped(messages):  # without a budget the resumed run would search on until its optimizer gives up
        if fake.calls > 300:
            raise RuntimeError("far past the run's budget")
        return wording_sensitive_responder(messages)

    with FakeLM(capped) as fake:
        first = optimize(task, budget=60, seed=3, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        again = optimize(task, resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert again.candidates == first.candidates and again.best.prompt == first.best.prompt
    assert fake.calls < 60 + 10


def test_extend_budget_continues_a_finished_run(finished_run):
    from promptlearn.errors import RunError
    from promptlearn.run import optimize
    from promptlearn.store import SQLiteRunStore
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    run, cache, res = finished_run
    with FakeLM(wording_sensitive_responder):
        with pytest.raises(RunError, match="--extend-budget only raises limits: max_calls 60 -> 30"):
            optimize(contract_task(max_calls=60), budget=30, resume=run, cache_path=cache, extend_budget=True)
        more = optimize(contract_task(max_calls=60), budget=120, resume=run, cache_path=cache, extend_budget=True)
        assert more.candidates > res.candidates and more.ledger.requests > res.ledger.requests
        later = optimize(contract_task(max_calls=60), resume=run, cache_path=cache)  # keeps the extended budget
    assert later.candidates == more.candidates and _status(run) == "finished"
    store = SQLiteRunStore(run, create=False)
    assert store.get_meta("config")["budget"]["max_calls"] == 120
    assert [(e["from"], e["to"]) for e in store.events("budget")] == [({"max_calls": 60}, {"max_calls": 120})]


@pytest.mark.parametrize("fault", ["model error", "ctrl-c"])
def test_a_fault_never_downgrades_a_finished_run(finished_run, fault):
    """Extending a finished run, then a fault, turned it into `failed` (and rewrote its best prompt)."""
    from promptlearn.errors import ModelError
    from promptlearn.run import optimize
    from promptlearn.store import SQLiteRunStore
    from promptlearn.testing import FakeLM, contract_task

    run, cache, res = finished_run
    best_file = (run / "best_prompt.txt").read_text()

    def broken(messages):
        raise KeyboardInterrupt if fault == "ctrl-c" else RuntimeError("the provider is down")

    with FakeLM(broken):
        with pytest.raises(KeyboardInterrupt if fault == "ctrl-c" else ModelError):
            optimize(contract_task(max_calls=60), budget=200, resume=run, cache_path=cache, extend_budget=True)
    assert _status(run) == "finished" and (run / "best_prompt.txt").read_text() == best_file
    store = SQLiteRunStore(run, create=False)
    assert store.get_meta("best") == res.best.id
    (event,) = store.events("fault")
    assert event["status"] == ("interrupted" if fault == "ctrl-c" else "failed")


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_cli_export_of_an_unfinished_run_warns(finished_run, tmp_path, status):
    from promptlearn.store import SQLiteRunStore

    run, _, _ = finished_run
    SQLiteRunStore(run, create=False).set_meta("status", status)
    proc = cli(["export", str(run), "--to", str(tmp_path / "app.yaml"), "--key", "assistant.system_prompt"],
               tmp_path)
    assert proc.returncode == 0 and "exported best prompt" in proc.stdout, proc.stderr
    assert (f"run run is {status}: this is the best prompt so far, not a finished run's; continue it with "
            f"promptlearn optimize TASK --resume {run}") in " ".join(proc.stderr.split()), proc.stderr


def test_a_command_run_in_process_leaves_no_retry_hook_behind(tmp_path):
    """The CLI's retry lines are for its own command: run in-process (typer's runner, a notebook), the hook
    stayed set and a library call made later printed retry lines."""
    from typer.testing import CliRunner

    from promptlearn import lm
    from promptlearn.cli import app

    task = write_task(tmp_path, TEN)
    CliRunner().invoke(app, ["eval", str(task), "--split", "nosuch"])
    assert lm._retry_notice is None
