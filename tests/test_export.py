"""Tests for promptlearn.export: writing a prompt into app config files and reading it back exactly."""

from __future__ import annotations

import json
import os
import runpy
import stat
import warnings

import pytest

from promptlearn.export import (
    ExportError,
    MissingKeyError,
    detect_format,
    env_name,
    export_prompt,
    prompt_sha256,
    read_prompt,
    read_prompt_text,
    read_provenance,
    read_provenance_text,
    render_export,
)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


HAS_RUAMEL = _has("ruamel.yaml")
HAS_TOMLKIT = _has("tomlkit")
HAS_DOTENV = _has("dotenv")
HAS_HYPOTHESIS = _has("hypothesis")

needs_ruamel = pytest.mark.skipif(not HAS_RUAMEL, reason="ruamel.yaml not installed")
needs_tomlkit = pytest.mark.skipif(not HAS_TOMLKIT, reason="tomlkit not installed")
needs_dotenv = pytest.mark.skipif(not HAS_DOTENV, reason="python-dotenv not installed")

# Multi-line, {placeholders}, both quote kinds, '#', ':', backslash, unicode, tab, leading spaces and a
# trailing newline.
PROMPT = (
    "You are the support assistant for {company}.\n"
    "Answer questions about \"{product}\" and the user's account, politely.\n"
    "# Rules\n"
    "- Address the user as {user_name}: never by e-mail.\n"
    "- Paths look like C:\\Users\\{user} -- keep backslashes.\n"
    "Unicode: café, naïve, 日本語, emoji 🚀 ✓\n"
    "\tTabbed line\n"
    "    indented with spaces\n"
)
PROMPT2 = "Be brief.\nReply in {language}.\n"
PROV1 = {"run_id": "run-1", "val": 0.62, "test": 0.58, "sha256": prompt_sha256(PROMPT)}
PROV2 = {"run_id": "run-2", "val": 0.71, "test": 0.66, "sha256": prompt_sha256(PROMPT2)}

YAML_CONFIG = """\
# Service configuration for the demo app.
service:
  name: demo   # shown in logs
  port: 8080

assistant:
  model: gpt-4o-mini  # cheap and good enough
  system_prompt: "You are a helpful assistant."  # replaced by promptlearn
  temperature: 0.2
  stop: ['\\n\\n', "END"]

# Everything below is unrelated.
logging:
  level: INFO
"""

JSON_CONFIG = """\
{
    "service": {"name": "demo", "tags": ["a", "b"]},
    "assistant": {
        "model": "gpt-4o-mini",
        "system_prompt": "You are a helpful assistant.",
        "temperature": 0.20
    },
    "logging": {
        "level": "INFO"
    }
}
"""

TOML_CONFIG = """\
# Service configuration for the demo app.
title = "demo"  # shown in logs

[assistant]
model = "gpt-4o-mini"  # cheap and good enough
system_prompt = "You are a helpful assistant."  # replaced by promptlearn
temperature = 0.2

# Everything below is unrelated.
[logging]
level = 'INFO'
"""

ENV_CONFIG = """\
# Environment for the demo app.
export OPENAI_MODEL=gpt-4o-mini  # cheap and good enough
ASSISTANT_SYSTEM_PROMPT="You are a helpful assistant."

LOG_LEVEL='INFO'
"""

PY_CONFIG = '''\
"""Settings for the demo app."""
import os

MODEL = os.environ.get("MODEL", "gpt-4o-mini")  # cheap and good enough

# The system prompt, maintained by promptlearn.
SYSTEM_PROMPT = "You are a helpful assistant."

TEMPERATURE = 0.2
'''

MD_CONFIG = """\
# Prompts

The assistant's prompt lives below; promptlearn rewrites it.

<!-- promptlearn:assistant.system_prompt -->
```text
You are a helpful assistant.
```
<!-- /promptlearn:assistant.system_prompt -->

## Notes

- keep this list
"""

# fmt -> (file name, original text, key, the original's lines that hold the key's value)
CASES = {
    "yaml": ("config.yaml", YAML_CONFIG, "assistant.system_prompt",
             ['  system_prompt: "You are a helpful assistant."  # replaced by promptlearn\n']),
    "json": ("config.json", JSON_CONFIG, "assistant.system_prompt",
             ['        "system_prompt": "You are a helpful assistant.",\n']),
    "toml": ("config.toml", TOML_CONFIG, "assistant.system_prompt",
             ['system_prompt = "You are a helpful assistant."  # replaced by promptlearn\n']),
    "env": (".env", ENV_CONFIG, "assistant.system_prompt",
            ['ASSISTANT_SYSTEM_PROMPT="You are a helpful assistant."\n']),
    "py": ("settings.py", PY_CONFIG, "settings.SYSTEM_PROMPT",
           ['SYSTEM_PROMPT = "You are a helpful assistant."\n']),
    "md": ("PROMPTS.md", MD_CONFIG, "assistant.system_prompt",
           ["```text\n", "You are a helpful assistant.\n", "```\n"]),
}
ALL = list(CASES)
PROPERTY_FORMATS = ["yaml", "toml", "json", "env", "py"]


def _marks(fmt: str) -> list:
    return {"yaml": [needs_ruamel], "toml": [needs_tomlkit]}.get(fmt, [])


def fmt_params(formats=ALL):
    return [pytest.param(f, marks=_marks(f), id=f) for f in formats]


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines only in `before`, lines only in `after`) once the common leading and trailing lines go."""
    b, a = before.splitlines(keepends=True), after.splitlines(keepends=True)
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[len(a) - 1 - s] == b[len(b) - 1 - s]:
        s += 1
    return b[p:len(b) - s], a[p:len(a) - s]


def only_key_lines_changed(before: str, after: str, old_lines: list[str]) -> bool:
    """True if the lines that differ are (a contiguous part of) the key's old lines, nothing else."""
    removed, _ = changed_lines(before, after)
    n = len(removed)
    return any(old_lines[i:i + n] == removed for i in range(len(old_lines) - n + 1))


def write(path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def read(path) -> str:
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def app_load(fmt: str, path, key: str) -> str:
    """Read the value the way an app would, without promptlearn's reader."""
    parts = key.split(".")
    if fmt == "yaml":
        from ruamel.yaml import YAML

        data = YAML(typ="safe", pure=True).load(read(path))
    elif fmt == "json":
        data = json.loads(read(path))
    elif fmt == "toml":
        import tomllib

        data = tomllib.loads(read(path))
    elif fmt == "py":
        return runpy.run_path(str(path))[parts[-1]]
    elif fmt == "env":
        if not HAS_DOTENV:
            pytest.skip("python-dotenv not installed")
        from dotenv import dotenv_values

        return dotenv_values(path, interpolate=False)[env_name(key)]
    else:
        return read_prompt(path, key)
    for p in parts:
        data = data[p]
    return data


# ------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("fmt", fmt_params())
def test_round_trip_keeps_the_rest_of_the_file(tmp_path, fmt):
    name, original, key, old_lines = CASES[fmt]
    path = tmp_path / name
    write(path, original)

    export_prompt(path, key, PROMPT)

    after = read(path)
    assert read_prompt(path, key) == PROMPT
    assert app_load(fmt, path, key) == PROMPT
    # every other line of the original is still there, byte for byte, and the new value sits where the
    # old one was
    assert only_key_lines_changed(original, after, old_lines)
    assert changed_lines(original, after)[1]
    assert detect_format(path) == fmt


@pytest.mark.parametrize("fmt", fmt_params())
def test_export_is_idempotent_and_replaces_in_place(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)

    export_prompt(path, key, PROMPT)
    first = read(path)
    export_prompt(path, key, PROMPT)
    assert read(path) == first

    export_prompt(path, key, PROMPT2)
    second = read(path)
    assert read_prompt(path, key) == PROMPT2
    export_prompt(path, key, PROMPT2)
    assert read(path) == second
    # the key was replaced, not appended again
    removed, _ = changed_lines(first, second)
    assert removed and all("helpful assistant" not in ln for ln in removed)
    export_prompt(path, key, PROMPT)
    assert read(path) == first


@pytest.mark.parametrize("fmt", fmt_params())
def test_creates_missing_file_and_directories(tmp_path, fmt):
    name, _, key, _ = CASES[fmt]
    path = tmp_path / "new" / "dir" / name
    export_prompt(path, key, PROMPT, provenance=PROV1)
    assert path.exists()
    assert read_prompt(path, key) == PROMPT
    assert app_load(fmt, path, key) == PROMPT
    text = read(path)
    assert text.endswith("\n")
    before = text
    export_prompt(path, key, PROMPT, provenance=PROV1)
    assert read(path) == before


@needs_ruamel
def test_yaml_new_file_layout(tmp_path):
    path = tmp_path / "app.yml"
    export_prompt(path, "assistant.system_prompt", "Line one.\nLine {two}.\n", provenance={"run_id": "r1"})
    assert read(path) == (
        "assistant:\n"
        "  # promptlearn: run_id=r1\n"
        "  system_prompt: |\n"
        "    Line one.\n"
        "    Line {two}.\n"
    )
    key_form = tmp_path / "key.yml"
    export_prompt(key_form, "assistant.system_prompt", "Line one.\n", provenance={"run_id": "r1"},
                  provenance_as="key")
    assert read(key_form) == (
        "assistant:\n"
        "  system_prompt: |\n"
        "    Line one.\n"
        "  system_prompt_provenance:\n"
        "    run_id: r1\n"
    )


def test_json_new_file_layout(tmp_path):
    path = tmp_path / "app.json"
    export_prompt(path, "assistant.system_prompt", "Hi {name}\n")
    assert read(path) == '{\n  "assistant": {\n    "system_prompt": "Hi {name}\\n"\n  }\n}\n'


@pytest.mark.parametrize("fmt", fmt_params())
def test_provenance_written_then_replaced_not_stacked(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)

    export_prompt(path, key, PROMPT, provenance=PROV1)
    text1 = read(path)
    assert "run-1" in text1 and PROV1["sha256"] in text1
    assert read_prompt(path, key) == PROMPT

    export_prompt(path, key, PROMPT2, provenance=PROV2)
    text2 = read(path)
    assert "run-2" in text2 and PROV2["sha256"] in text2
    assert "run-1" not in text2 and PROV1["sha256"] not in text2
    assert text2.count("run_id") == 1
    assert read_prompt(path, key) == PROMPT2
    assert app_load(fmt, path, key) == PROMPT2

    export_prompt(path, key, PROMPT2, provenance=PROV2)
    assert read(path) == text2
    # nothing but the key's and the provenance's lines changed
    removed, _ = changed_lines(original, text2)
    assert all(("helpful assistant" in ln or ln.startswith("```")) for ln in removed)


@needs_ruamel
def test_yaml_provenance_is_a_comment_above_the_key_or_an_opt_in_sibling_mapping(tmp_path):
    from ruamel.yaml import YAML

    path = tmp_path / "config.yaml"
    write(path, YAML_CONFIG)
    export_prompt(path, "assistant.system_prompt", PROMPT, provenance=PROV1)
    text = read(path)
    data = YAML(typ="safe", pure=True).load(text)
    assert list(data["assistant"]) == ["model", "system_prompt", "temperature", "stop"]  # no key for a schema
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("  system_prompt: |"))
    assert lines[i - 1] == "  # promptlearn: run_id=run-1 val=0.62 test=0.58 sha256=" + PROV1["sha256"]
    assert lines[i - 2] == "  model: gpt-4o-mini  # cheap and good enough"
    assert read_provenance(path, "assistant.system_prompt") == PROV1

    export_prompt(path, "assistant.system_prompt", PROMPT, provenance=PROV1, provenance_as="key")
    text = read(path)
    data = YAML(typ="safe", pure=True).load(text)
    assert data["assistant"]["system_prompt_provenance"] == PROV1 and "# promptlearn:" not in text
    assert list(data["assistant"]) == ["model", "system_prompt", "system_prompt_provenance", "temperature",
                                       "stop"]
    assert read_provenance(path, "assistant.system_prompt") == PROV1


@needs_tomlkit
def test_toml_provenance_is_a_comment_above_the_key_or_an_opt_in_sibling_table(tmp_path):
    import tomllib

    path = tmp_path / "config.toml"
    write(path, TOML_CONFIG)
    export_prompt(path, "assistant.system_prompt", PROMPT, provenance=dict(PROV1, note=None))
    text = read(path)
    assert list(tomllib.loads(text)["assistant"]) == ["model", "system_prompt", "temperature"]
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("system_prompt = "))
    assert lines[i - 1] == ("# promptlearn: run_id=run-1 val=0.62 test=0.58 sha256=" + PROV1["sha256"]
                            + " note=null")
    assert read_provenance(path, "assistant.system_prompt") == dict(PROV1, note=None)

    export_prompt(path, "assistant.system_prompt", PROMPT, provenance=dict(PROV1, note=None), provenance_as="key")
    text = read(path)
    data = tomllib.loads(text)
    assert data["assistant"]["system_prompt_provenance"] == PROV1  # None has no TOML form: dropped
    assert list(data["assistant"]) == ["model", "system_prompt", "system_prompt_provenance", "temperature"]
    assert "# promptlearn:" not in text and read_provenance(path, "assistant.system_prompt") == PROV1


def test_json_provenance_is_a_sibling_object(tmp_path):
    path = tmp_path / "config.json"
    write(path, JSON_CONFIG)
    export_prompt(path, "assistant.system_prompt", PROMPT, provenance=PROV1)
    data = json.loads(read(path))
    assert data["assistant"]["system_prompt_provenance"] == PROV1
    assert list(data["assistant"]) == ["model", "system_prompt", "system_prompt_provenance", "temperature"]


@pytest.mark.parametrize("fmt", ["env", "py"])
def test_comment_provenance_sits_just_above_the_key(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, PROMPT2, provenance=PROV1)
    export_prompt(path, key, PROMPT2, provenance=PROV2)
    lines = read(path).splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(("ASSISTANT_SYSTEM_PROMPT=", "SYSTEM_PROMPT =")))
    assert lines[i - 1] == "# promptlearn: run_id=run-2 val=0.71 test=0.66 sha256=" + PROV2["sha256"]
    assert sum(ln.startswith("# promptlearn:") for ln in lines) == 1


def test_markdown_provenance_line_inside_markers(tmp_path):
    path = tmp_path / "PROMPTS.md"
    write(path, MD_CONFIG)
    export_prompt(path, "assistant.system_prompt", PROMPT2, provenance=PROV1)
    export_prompt(path, "assistant.system_prompt", PROMPT2, provenance=PROV2)
    text = read(path)
    start = text.index("<!-- promptlearn:assistant.system_prompt -->")
    end = text.index("<!-- /promptlearn:assistant.system_prompt -->")
    block = text[start:end]
    assert block.count("<!-- promptlearn provenance:") == 1 and "run_id=run-2" in block
    assert "run-1" not in text


COMMENT_FORMATS = ["yaml", "toml", "env", "py", "md"]


def app_data(fmt: str, path) -> object:
    """The whole file as the app loads it (what a strict schema would validate)."""
    if fmt == "yaml":
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(read(path))
    if fmt == "toml":
        import tomllib

        return tomllib.loads(read(path))
    if fmt == "json":
        return json.loads(read(path))
    if fmt == "py":
        return {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}
    if fmt == "env":
        from promptlearn.export.env_format import _env_bindings

        return {b.key: b.value for b in _env_bindings(read(path))}
    return read(path).count("<!-- promptlearn:")


@pytest.mark.parametrize("fmt", fmt_params(COMMENT_FORMATS))
def test_provenance_comment_adds_no_key_and_reads_back(tmp_path, fmt):
    """The default form is a comment: the data the app loads has exactly the keys it had (plus none)."""
    name, original, key, _ = CASES[fmt]
    plain, with_prov = tmp_path / ("a" + name), tmp_path / ("b" + name)
    write(plain, original)
    write(with_prov, original)
    export_prompt(plain, key, PROMPT)
    export_prompt(with_prov, key, PROMPT, provenance=PROV1)
    assert app_data(fmt, with_prov) == app_data(fmt, plain)
    assert "_provenance" not in read(with_prov)
    assert read_provenance(with_prov, key) == PROV1
    assert read_provenance(plain, key) is None
    # the provenance text is one comment line attached to the key
    added = [ln for ln in read(with_prov).splitlines() if ln not in read(plain).splitlines()]
    assert len(added) == 1 and "promptlearn" in added[0] and PROV1["sha256"] in added[0]
    assert added[0].lstrip().startswith("<!--" if fmt == "md" else "#")


def test_json_has_no_comments_so_provenance_is_the_sibling_key_in_both_forms(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write(a, JSON_CONFIG)
    write(b, JSON_CONFIG)
    export_prompt(a, "assistant.system_prompt", PROMPT, provenance=PROV1)
    export_prompt(b, "assistant.system_prompt", PROMPT, provenance=PROV1, provenance_as="key")
    assert read(a) == read(b) and read_provenance(a, "assistant.system_prompt") == PROV1


@pytest.mark.parametrize("fmt", ["env", "py", "md"])
def test_provenance_key_form_needs_a_mapping_format(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    with pytest.raises(ValueError, match="no mappings for a sibling provenance key"):
        export_prompt(path, key, PROMPT, provenance=PROV1, provenance_as="key")
    with pytest.raises(ValueError, match="provenance form must be one of comment, key"):
        export_prompt(path, key, PROMPT, provenance=PROV1, provenance_as="sibling")
    assert read(path) == original


@pytest.mark.parametrize("fmt", fmt_params(["yaml", "toml", "json"]))
def test_switching_provenance_form_leaves_no_stale_copy(tmp_path, fmt):
    """comment -> key drops the comment; key -> comment keeps the key the app may read, in step (a stale sha256
    next to the prompt would mislead a gate), and the reader sees the newest."""
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, PROMPT, provenance=PROV1)
    export_prompt(path, key, PROMPT2, provenance=PROV2, provenance_as="key")
    text = read(path)
    assert "run-1" not in text and text.count("run-2") == 1 and "# promptlearn:" not in text
    assert read_provenance(path, key) == PROV2
    export_prompt(path, key, PROMPT, provenance=PROV1)
    text = read(path)
    assert "run-2" not in text and read_provenance(path, key) == PROV1
    assert text.count("run-1") == (1 if fmt == "json" else 2)  # the sibling key and the comment, both current
    export_prompt(path, key, PROMPT, provenance=PROV1)
    assert read(path) == text


@pytest.mark.parametrize("fmt", fmt_params(COMMENT_FORMATS))
def test_re_export_is_byte_for_byte_idempotent_and_replaces_the_comment(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, PROMPT, provenance=PROV1)
    first = read(path)
    export_prompt(path, key, PROMPT, provenance=PROV1)
    assert read(path) == first
    mtime = os.stat(path).st_mtime_ns
    export_prompt(path, key, PROMPT2, provenance=PROV2)
    export_prompt(path, key, PROMPT, provenance=PROV1)
    assert read(path) == first  # back to the same bytes: the comment was replaced, never stacked
    assert os.stat(path).st_mtime_ns >= mtime
    export_prompt(path, key, PROMPT2)  # no provenance given: the comment an earlier export wrote stays
    assert read_provenance(path, key) == PROV1


TRICKY_PROV = {"run_id": "20261201-1200 best -- of all", "val": 0.5, "test": None, "sha256": "ab" * 32,
               "n": 3, "ok": True, "numeric_id": "123", "empty": "", "quote": 'say "hi" = \'x\' -->',
               "unicode": "café 🚀", "decoding": {"guidance": 1.5}, "list": [1, "a b"]}


@pytest.mark.parametrize("fmt", fmt_params(COMMENT_FORMATS))
def test_provenance_comment_round_trips_every_value(tmp_path, fmt):
    name, original, key, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, PROMPT, provenance=TRICKY_PROV)
    assert read_provenance(path, key) == TRICKY_PROV
    assert read_prompt(path, key) == PROMPT and app_load(fmt, path, key) == PROMPT
    comment = next(ln for ln in read(path).splitlines() if "promptlearn" in ln and "run_id=" in ln)
    assert "--" not in comment.replace("<!--", "").replace("-->", "") and comment.isascii()


@pytest.mark.parametrize("fmt, text, key", [
    pytest.param("yaml", "a:\n  other: |\n    text\n    # promptlearn: run_id=fake\n  p: old\n", "a.p",
                 marks=needs_ruamel, id="yaml-block-scalar"),
    pytest.param("toml", 'other = """\ntext\n# promptlearn: run_id=fake"""\np = "old"\n', "p",
                 marks=needs_tomlkit, id="toml-multiline"),
    pytest.param("py", 'OTHER = """text\n# promptlearn: run_id=fake"""\nP = "old"\n', "P", id="py-triple"),
    pytest.param("env", 'OTHER="text\n# promptlearn: run_id=fake"\nP="old"\n', "P", id="env-multiline"),
])
def test_a_comment_lookalike_inside_a_string_is_not_provenance(fmt, text, key):
    """`# promptlearn:` as the last line of a multi-line value above the key is that value, not a comment."""
    assert read_provenance_text(text, key, fmt) is None
    out = render_export(text, key, "new", fmt, provenance=PROV1)
    assert read_prompt_text(out, key, fmt) == "new" and read_provenance_text(out, key, fmt) == PROV1
    assert "run_id=fake" in out  # the other value is untouched
    assert render_export(out, key, "new", fmt, provenance=PROV1) == out


@needs_ruamel
def test_yaml_provenance_comment_in_a_file_the_splice_cannot_handle(tmp_path):
    """Anchors and aliases go through a full ruamel round trip; the comment still lands above the key."""
    text = "base: &b\n  model: m\nassistant:\n  <<: *b\n  system_prompt: old  # mine\n"
    out = render_export(text, "assistant.system_prompt", PROMPT2, "yaml", provenance=PROV1)
    assert read_provenance_text(out, "assistant.system_prompt", "yaml") == PROV1
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == PROMPT2
    assert render_export(out, "assistant.system_prompt", PROMPT2, "yaml", provenance=PROV1) == out


@needs_tomlkit
@pytest.mark.parametrize("text", ['assistant.system_prompt = "old"\nassistant.model = "m"\n',
                                  'assistant = {model = "m", system_prompt = "old"}\n',
                                  '[app]\n# keep me\nassistant.system_prompt = "old"\n'],
                         ids=["dotted", "inline-table", "dotted-in-table"])
def test_toml_provenance_comment_above_the_line_holding_a_dotted_or_inline_key(text):
    import tomllib

    key = "app.assistant.system_prompt" if text.startswith("[app]") else "assistant.system_prompt"
    out = render_export(text, key, PROMPT2, "toml", provenance=PROV1)
    assert read_provenance_text(out, key, "toml") == PROV1
    assert tomllib.loads(out) == tomllib.loads(render_export(text, key, PROMPT2, "toml"))
    line = next(ln for ln in out.splitlines() if ln.startswith("# promptlearn:"))
    following = out.splitlines()[out.splitlines().index(line) + 1]
    assert following.startswith(("assistant.system_prompt", "assistant = {"))
    assert "# keep me" in out or "[app]" not in out
    assert render_export(out, key, PROMPT2, "toml", provenance=PROV1) == out
    out2 = render_export(out, key, PROMPT, "toml", provenance=PROV2)
    assert out2.count("# promptlearn:") == 1 and read_provenance_text(out2, key, "toml") == PROV2


# ------------------------------------------------------------------------------------------- TOML string style

TOML_STYLES = {
    "basic": 'p = "old"  # mine\n',
    "literal": "p = 'old'  # mine\n",
    "ml-basic": 'p = """\nold\n"""  # mine\n',
    "ml-literal": "p = '''\nold\n'''  # mine\n",
}


@needs_tomlkit
@pytest.mark.parametrize("style, prompt, expected", [
    ("basic", "Be brief.", 'p = "Be brief."  # mine\n'),
    ("literal", "C:\\Users\\{name}", "p = 'C:\\Users\\{name}'  # mine\n"),
    ("ml-basic", "Be brief.", 'p = """\nBe brief."""  # mine\n'),
    ("ml-basic", "One.\nTwo.\n", 'p = """\nOne.\nTwo.\n"""  # mine\n'),
    ("ml-literal", "One \\d+.\nTwo.\n", "p = '''\nOne \\d+.\nTwo.\n'''  # mine\n"),
    ("ml-literal", "Be brief.", "p = '''\nBe brief.'''  # mine\n"),
    # a multi-line prompt makes a one-line style multi-line, of the same kind
    ("basic", "One.\nTwo.\n", 'p = """\nOne.\nTwo.\n"""  # mine\n'),
    ("literal", "One \\d.\nTwo.\n", "p = '''\nOne \\d.\nTwo.\n'''  # mine\n"),
], ids=["basic", "literal", "ml-basic-one-line", "ml-basic", "ml-literal", "ml-literal-one-line",
        "basic-to-ml", "literal-to-ml"])
def test_toml_keeps_the_string_style_it_replaces(style, prompt, expected):
    import tomllib

    out = render_export(TOML_STYLES[style], "p", prompt, "toml")
    assert out == expected
    assert tomllib.loads(out)["p"] == prompt


@needs_tomlkit
@pytest.mark.parametrize("style, prompt, starts", [
    ("literal", "It's a 'quote'.", 'p = "It'),             # a literal string has no escape for '
    ("literal", "bell\x07", 'p = "bell\\u0007"'),            # nor for control characters
    ("ml-literal", "has ''' three\n", 'p = """'),            # ''' would end a multi-line literal
    ("ml-literal", "ends with a quote'", 'p = """'),
    ("ml-literal", "carriage\r\nreturn\n", 'p = """'),
    ("literal", "It's\nmulti-line\n", "p = '''"),            # still literal where it can be
], ids=["quote", "control", "triple-quote", "trailing-quote", "cr", "quote-multi-line"])
def test_toml_falls_back_to_the_nearest_valid_style(style, prompt, starts):
    import tomllib

    out = render_export(TOML_STYLES[style], "p", prompt, "toml")
    assert out.startswith(starts) and out.rstrip().endswith("# mine")
    assert tomllib.loads(out)["p"] == prompt


@needs_tomlkit
@pytest.mark.parametrize("style", list(TOML_STYLES))
@pytest.mark.parametrize("prompt", [PROMPT, PROMPT2, "", "\n", "'", "''", "'''", '"""', "\\", "a'\nb'''c\n",
                                    "\ttab\x7fdel", "x\r", "\u2028 line sep", "trailing '\n'"])
def test_toml_every_style_and_prompt_reads_back_exactly(style, prompt):
    import tomllib

    out = render_export(TOML_STYLES[style], "p", prompt, "toml", provenance=PROV1)
    assert tomllib.loads(out)["p"] == prompt
    assert read_provenance_text(out, "p", "toml") == PROV1


# ------------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("fmt", fmt_params())
@pytest.mark.parametrize("prompt", ["You are terse: answer in {n} words, no 'quotes' or # marks.",
                                    "", "\n", "ends without newline\nsecond line", "two trailing\n\n",
                                    "  leading spaces\nand more", "\nstarts with a newline",
                                    'triple """ quotes and \'\'\' too"', "back\\slash at end\\",
                                    "tab\tand ünïcödé ✓ 🚀", "- looks: like yaml\n? key\n"],
                         ids=["single-line", "empty", "newline-only", "no-trailing-nl", "two-trailing-nl",
                              "leading-spaces", "leading-newline", "quotes", "backslash", "unicode",
                              "yamlish"])
def test_edge_prompts_round_trip(tmp_path, fmt, prompt):
    name, original, key, old_lines = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, prompt)
    assert read_prompt(path, key) == prompt
    assert app_load(fmt, path, key) == prompt
    assert only_key_lines_changed(original, read(path), old_lines)
    first = read(path)
    export_prompt(path, key, prompt)
    assert read(path) == first


@pytest.mark.parametrize("fmt", fmt_params(["yaml", "json", "toml", "env", "py"]))  # md always fences
def test_single_line_prompt_stays_on_one_line(tmp_path, fmt):
    name, original, key, old_lines = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    export_prompt(path, key, "Answer in {language}: be kind.")
    removed, added = changed_lines(original, read(path))
    assert removed == old_lines and len(added) == 1
    assert "Answer in {language}: be kind." in added[0]


@pytest.mark.parametrize("fmt", fmt_params())
def test_missing_key_raises_clear_error(tmp_path, fmt):
    name, original, _, _ = CASES[fmt]
    path = tmp_path / name
    write(path, original)
    with pytest.raises(MissingKeyError) as info:
        read_prompt(path, "nothing.here")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{name} has no key 'nothing.here'")


@pytest.mark.parametrize("fmt", fmt_params(["yaml", "json", "toml"]))
def test_missing_key_message_exact(tmp_path, fmt):
    path = tmp_path / f"config.{fmt}"
    export_prompt(path, "a.other", "x")
    with pytest.raises(KeyError) as info:
        read_prompt(path, "a.b")
    assert str(info.value) == f"config.{fmt} has no key 'a.b'"


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_prompt(tmp_path / "nope.yaml", "a.b")


def test_prompt_sha256():
    assert prompt_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert prompt_sha256("é") == prompt_sha256("\u00e9") != prompt_sha256("e\u0301")


def test_detect_format():
    assert detect_format("a/config.yaml") == detect_format("x.YML") == "yaml"
    assert detect_format("settings.json") == "json"
    assert detect_format("pyproject.toml") == "toml"
    assert detect_format(".env") == detect_format("prod.env") == detect_format("x/.env.local") == "env"
    assert detect_format("prompts.py") == "py"
    assert detect_format("README.md") == "md"
    assert detect_format("whatever.cfg", "yml") == "yaml"
    with pytest.raises(ValueError, match="--format"):
        detect_format("config.cfg")
    with pytest.raises(ValueError, match="unknown config format"):
        detect_format("config.yaml", "ini")


def test_unknown_suffix_needs_format(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        export_prompt(tmp_path / "prompt.txt", "a.b", "x")
    export_prompt(tmp_path / "prompt.txt", "a.b", "x\n", fmt="json")
    assert json.loads(read(tmp_path / "prompt.txt")) == {"a": {"b": "x\n"}}


def test_keeps_file_mode_and_bom(tmp_path):
    path = tmp_path / ".env"
    write(path, "\ufeffA=1\n")
    os.chmod(path, 0o600)
    export_prompt(path, "SYSTEM_PROMPT", "hi")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read(path) == '\ufeffA=1\nSYSTEM_PROMPT="hi"\n'


def test_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, promptlearn.export; "
            "assert not any(m.split('.')[0] in ('ruamel', 'tomlkit', 'dotenv') for m in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_unchanged_file_is_not_rewritten(tmp_path):
    path = tmp_path / "config.json"
    export_prompt(path, "p", "x")
    os.utime(path, (1, 1))
    export_prompt(path, "p", "x")
    assert os.stat(path).st_mtime == 1


# ------------------------------------------------------------------------------------------------- yaml


@needs_ruamel
@pytest.mark.parametrize("prompt,header", [("a\nb\n", "|"), ("a\nb", "|-"), ("a\nb\n\n", "|+"),
                                           ("  a\nb\n", "|2")])
def test_yaml_literal_block_chomping(prompt, header):
    out = render_export(YAML_CONFIG, "assistant.system_prompt", prompt, "yaml")
    assert f"  system_prompt: {header}  # replaced by promptlearn\n" in out
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == prompt


@needs_ruamel
def test_yaml_replaces_existing_block_scalar_and_keeps_following_lines():
    original = (
        "assistant:\n"
        "  system_prompt: |-   # tuned\n"
        "    old line one\n"
        "    old line two\n"
        "\n"
        "  # a comment about temperature\n"
        "  temperature: 0.2\n"
    )
    out = render_export(original, "assistant.system_prompt", PROMPT, "yaml")
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == PROMPT
    assert out.startswith("assistant:\n  system_prompt: |   # tuned\n    You are the support")
    assert out.endswith("    indented with spaces\n\n  # a comment about temperature\n  temperature: 0.2\n")
    assert render_export(out, "assistant.system_prompt", PROMPT, "yaml") == out


@needs_ruamel
def test_yaml_creates_intermediate_mappings_with_file_indentation():
    original = "# four-space file\napp:\n    name: demo\n\n# end\n"
    out = render_export(original, "assistant.prompts.system", "Hi\nthere\n", "yaml")
    assert out == (
        "# four-space file\napp:\n    name: demo\n"
        "assistant:\n    prompts:\n        system: |\n            Hi\n            there\n"
        "\n# end\n"
    )
    out2 = render_export(original, "app.system", "Hi\n", "yaml")
    assert out2 == "# four-space file\napp:\n    name: demo\n    system: |\n        Hi\n\n# end\n"


@needs_ruamel
def test_yaml_null_parent_and_empty_value():
    original = "assistant:   # filled in later\nother: 1\n"
    out = render_export(original, "assistant.system_prompt", "x\ny\n", "yaml")
    assert out == "assistant:   # filled in later\n  system_prompt: |\n    x\n    y\nother: 1\n"
    original = "assistant:\n  system_prompt:\n  model: m\n"
    out = render_export(original, "assistant.system_prompt", "x\ny", "yaml")
    assert out == "assistant:\n  system_prompt: |-\n    x\n    y\n  model: m\n"


@needs_ruamel
def test_yaml_refuses_to_overwrite_a_mapping():
    with pytest.raises(ExportError, match="holds a mapping"):
        render_export("assistant:\n  system_prompt:\n    a: 1\n", "assistant.system_prompt", "x", "yaml")
    with pytest.raises(ExportError, match="not a mapping"):
        render_export("assistant: text\n", "assistant.system_prompt", "x", "yaml")


@needs_ruamel
def test_yaml_flow_mapping_falls_back_to_ruamel_round_trip():
    original = "# top comment\nassistant: {model: m, system_prompt: old}\nother: [1, 2]  # keep\n"
    out = render_export(original, "assistant.system_prompt", PROMPT, "yaml")
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == PROMPT
    assert out.startswith("# top comment\n") and "# keep" in out


@needs_ruamel
def test_yaml_unprintable_characters_use_double_quotes():
    prompt = "bell\x07 and\r\ncrlf and nel\x85 line\n"
    out = render_export(YAML_CONFIG, "assistant.system_prompt", prompt, "yaml")
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == prompt
    assert '  system_prompt: "bell\\x07' in out


@needs_ruamel
def test_yaml_crlf_file_keeps_its_line_breaks():
    original = YAML_CONFIG.replace("\n", "\r\n")
    out = render_export(original, "assistant.system_prompt", PROMPT, "yaml")
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == PROMPT
    assert "\n" not in out.replace("\r\n", "")


@needs_ruamel
def test_yaml_document_markers_and_aliases_are_kept():
    original = "%YAML 1.2\n---\n# defaults\nbase:\n  model: &m gpt\n  fallback: *m\n...\n"
    out = render_export(original, "base.system_prompt", "Hi\n", "yaml")
    assert out == original.replace("...\n", "  system_prompt: |\n    Hi\n...\n")


# ------------------------------------------------------------------------------------------------- toml


@needs_tomlkit
def test_toml_uses_multiline_basic_string():
    out = render_export(TOML_CONFIG, "assistant.system_prompt", "Hi {name}.\nBye \"now\".\n", "toml")
    assert 'system_prompt = """\nHi {name}.\nBye "now".\n"""  # replaced by promptlearn\n' in out


@needs_tomlkit
def test_toml_new_table_and_dotted_keys():
    out = render_export(TOML_CONFIG, "agent.prompts.system", PROMPT2, "toml")
    assert out.startswith(TOML_CONFIG)
    assert read_prompt_text(out, "agent.prompts.system", "toml") == PROMPT2
    dotted = 'name = "x"\nassistant.system_prompt = "old"\nassistant.model = "m"\n'
    out = render_export(dotted, "assistant.system_prompt", PROMPT2, "toml")
    assert read_prompt_text(out, "assistant.system_prompt", "toml") == PROMPT2
    assert out.startswith('name = "x"\n') and out.endswith('assistant.model = "m"\n')


@needs_tomlkit
def test_toml_control_characters_are_escaped():
    prompt = "a\x00b\x1b[0m\r\nc\x7f\"\"\"\"\n\""
    out = render_export("", "p", prompt, "toml")
    assert read_prompt_text(out, "p", "toml") == prompt


# ------------------------------------------------------------------------------------------------- json


def test_json_keeps_tab_indentation_and_layout():
    original = '{\n\t"a": [1, 2],\n\t"n": 1.50,\n\t"u": "\\u00e9"\n}'
    out = render_export(original, "b.c", "x\ny", "json")
    assert out == '{\n\t"a": [1, 2],\n\t"n": 1.50,\n\t"u": "\\u00e9",\n\t"b": {\n\t\t"c": "x\\ny"\n\t}\n}'


def test_json_compact_file_stays_compact():
    out = render_export('{"a":1,"b":{}}\n', "b.p", "x\n", "json", provenance={"run_id": "r"})
    assert out == '{"a":1,"b":{"p":"x\\n","p_provenance":{"run_id":"r"}}}\n'


def test_json_null_parent_and_errors():
    out = render_export('{\n  "a": null\n}\n', "a.p", "x", "json")
    assert out == '{\n  "a": {\n    "p": "x"\n  }\n}\n'
    with pytest.raises(ExportError, match="not an object"):
        render_export('{"a": 1}', "a.p", "x", "json")
    with pytest.raises(ExportError, match="holds an object"):
        render_export('{"p": {"x": 1}}', "p", "x", "json")
    with pytest.raises(ExportError, match="cannot parse JSON"):
        render_export('{"a": 1,}', "p", "x", "json")


def test_json_empty_object_file_gets_indented():
    assert render_export("{}\n", "a", "x", "json") == '{\n  "a": "x"\n}\n'


# -------------------------------------------------------------------------------------------------- env


def test_env_name_rules():
    assert env_name("assistant.system_prompt") == "ASSISTANT_SYSTEM_PROMPT"
    assert env_name("my-app.prompt") == "MY_APP_PROMPT"
    assert env_name("SYSTEM_PROMPT") == "SYSTEM_PROMPT"
    assert env_name("system_prompt") == "SYSTEM_PROMPT"
    assert env_name("system_prompt", {"system_prompt"}) == "system_prompt"


def test_env_uses_existing_name_and_keeps_export_prefix_and_comment():
    original = "export system_prompt='old'  # tuned\nOTHER=1\n"
    out = render_export(original, "system_prompt", "a\nb \"c\" $HOME \\n", "env")
    assert out == 'export system_prompt="a\\nb \\"c\\" $HOME \\\\n"  # tuned\nOTHER=1\n'
    assert read_prompt_text(out, "system_prompt", "env") == "a\nb \"c\" $HOME \\n"


def test_env_multiline_quoted_value_is_replaced_whole():
    original = 'A=1\nSYSTEM_PROMPT="line one\nline two"\nB=2\n'
    assert read_prompt_text(original, "SYSTEM_PROMPT", "env") == "line one\nline two"
    out = render_export(original, "SYSTEM_PROMPT", "new", "env")
    assert out == 'A=1\nSYSTEM_PROMPT="new"\nB=2\n'


@needs_dotenv
def test_env_read_back_by_python_dotenv(tmp_path):
    from dotenv import dotenv_values

    path = tmp_path / ".env"
    write(path, ENV_CONFIG)
    prompt = PROMPT + "Costs $5; use $VAR literally.\r\n\tEnd \\n not a newline"
    export_prompt(path, "assistant.system_prompt", prompt, provenance=PROV1)
    values = dotenv_values(path)  # default settings, interpolation on
    assert values["ASSISTANT_SYSTEM_PROMPT"] == prompt
    assert values["OPENAI_MODEL"] == "gpt-4o-mini" and values["LOG_LEVEL"] == "INFO"
    assert read_prompt(path, "assistant.system_prompt") == prompt


def test_env_warns_about_interpolation():
    with pytest.warns(UserWarning, match="interpolate"):
        render_export("", "P", "Use ${NAME}", "env")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_export("", "P", "Use {NAME} and $5", "env")


# --------------------------------------------------------------------------------------------------- py


def test_py_triple_quotes_and_backslashes(tmp_path):
    path = tmp_path / "prompts.py"
    write(path, PY_CONFIG)
    prompt = 'He said """stop""" and \'\'\'go\'\'\'.\nPath C:\\new\\table\nends with a quote"'
    export_prompt(path, "SYSTEM_PROMPT", prompt)
    assert runpy.run_path(str(path))["SYSTEM_PROMPT"] == prompt
    assert read_prompt(path, "SYSTEM_PROMPT") == prompt


def test_py_annotated_assignment_and_append():
    original = "from typing import Final\n\nPROMPT: Final[str] = 'old'  # x\n"
    out = render_export(original, "PROMPT", "new\nprompt\n", "py")
    assert out == 'from typing import Final\n\nPROMPT: Final[str] = """new\nprompt\n"""  # x\n'
    out = render_export("X = 1\n", "app.prompt", "hi", "py")
    assert out == 'X = 1\n\nprompt = "hi"\n'


def test_py_refuses_to_overwrite_an_expression():
    with pytest.raises(ExportError, match="not a string literal"):
        render_export("import os\nPROMPT = os.environ['P']\n", "PROMPT", "x", "py")


def test_py_control_characters():
    prompt = "nul\x00 cr\r ff\x0c nel\x85 ls\u2028 end\n"
    out = render_export("", "P", prompt, "py")
    assert read_prompt_text(out, "P", "py") == prompt
    ns: dict = {}
    exec(compile(out, "x.py", "exec"), ns)
    assert ns["P"] == prompt


# --------------------------------------------------------------------------------------------------- md


def test_md_fence_longer_than_backtick_runs():
    prompt = "Use code:\n```python\nprint(1)\n```\nand ````four````.\n"
    out = render_export(MD_CONFIG, "assistant.system_prompt", prompt, "md")
    assert "`````text\n" in out
    assert read_prompt_text(out, "assistant.system_prompt", "md") == prompt


def test_md_appends_block_and_ignores_markers_in_code_fences():
    original = (
        "# Docs\n\nExample of the syntax:\n\n```\n<!-- promptlearn:p -->\n```\n"
    )
    with pytest.raises(MissingKeyError):
        read_prompt_text(original, "p", "md")
    out = render_export(original, "p", "Hello {name}", "md", provenance={"run_id": "r"})
    assert out == original + (
        "\n<!-- promptlearn:p -->\n<!-- promptlearn provenance: run_id=r -->\n"
        "```text\nHello {name}\n```\n<!-- /promptlearn:p -->\n"
    )
    assert read_prompt_text(out, "p", "md") == "Hello {name}"


def test_md_two_keys_are_independent():
    out = render_export("", "a", "first", "md")
    out = render_export(out, "b", "second\n", "md")
    out = render_export(out, "a", "FIRST", "md")
    assert read_prompt_text(out, "a", "md") == "FIRST"
    assert read_prompt_text(out, "b", "md") == "second\n"


# ------------------------------------------------------------------------------------------- properties

if HAS_HYPOTHESIS:
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    # printable unicode (letters, marks, numbers, punctuation, symbols, spaces) plus newlines and tabs,
    # with the characters that matter to the formats' quoting over-represented
    prompt_text = st.text(
        alphabet=st.one_of(
            st.characters(whitelist_categories=("L", "M", "N", "P", "S", "Zs")),
            st.sampled_from(list("\n\n\t \"'#:{}[]\\`$|>-*&!%@,")),
        ),
        max_size=120,
    )

    @pytest.mark.parametrize("fmt", fmt_params(PROPERTY_FORMATS))
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(prompt=prompt_text)
    @example(prompt=" \n").via("a line of spaces only: YAML wrote a |2 block, then re-export chose double quotes")
    @example(prompt="a\n \nb\n")
    def test_property_arbitrary_prompts_round_trip(fmt, prompt):
        _, original, key, old_lines = CASES[fmt]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = render_export(original, key, prompt, fmt)
            assert read_prompt_text(out, key, fmt) == prompt
            assert only_key_lines_changed(original, out, old_lines)
            assert render_export(out, key, prompt, fmt) == out
            if fmt == "env" and HAS_DOTENV:
                import io

                from dotenv import dotenv_values

                assert dotenv_values(stream=io.StringIO(out), interpolate=False)[env_name(key)] == prompt

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(prompt=prompt_text)
    def test_property_markdown_round_trip(prompt):
        out = render_export(MD_CONFIG, "assistant.system_prompt", prompt, "md")
        assert read_prompt_text(out, "assistant.system_prompt", "md") == prompt
        assert out.startswith(MD_CONFIG[:MD_CONFIG.index("<!--")])
        assert out.endswith(MD_CONFIG[MD_CONFIG.index("\n## Notes"):])
else:  # pragma: no cover

    def test_property_arbitrary_prompts_round_trip():
        pytest.skip("hypothesis not installed")


# ---- keep what the app's file had ------------------------------------------------------------------------------


@needs_ruamel
@pytest.mark.parametrize("old,new", [
    ("  system_prompt: |-\n    You are a pirate.\n    Be brief.\n", "  system_prompt: |-\n    One line now.\n"),
    ("  system_prompt: |\n    You are a pirate.\n", "  system_prompt: |-\n    One line now.\n"),
    ("  system_prompt: 'old'\n", "  system_prompt: 'One line now.'\n"),
    ('  system_prompt: "old"\n', '  system_prompt: "One line now."\n'),
])
def test_yaml_keeps_the_scalar_style_of_the_value_it_replaces(old, new):
    text = "assistant:\n" + old + "  temperature: 0\n"
    out = render_export(text, "assistant.system_prompt", "One line now.", "yaml")
    assert out == "assistant:\n" + new + "  temperature: 0\n"
    assert read_prompt_text(out, "assistant.system_prompt", "yaml") == "One line now."


@pytest.mark.parametrize("name,fmt", [("app.yaml", "json"), ("app.json", "yaml"), ("app.toml", "yaml")])
def test_a_format_the_file_name_contradicts_is_refused(tmp_path, name, fmt):
    with pytest.raises(ValueError, match=f"is a .* file by its name, not {fmt}"):
        export_prompt(tmp_path / name, "p", "x", fmt=fmt)
    assert not (tmp_path / name).exists()
    export_prompt(tmp_path / "app.conf", "p", "x", fmt=fmt)  # a name that says nothing takes any format
