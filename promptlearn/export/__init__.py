r"""Write an optimized system prompt into an app's own config file, and read it back as the app will.

`export_prompt(path, key, prompt)` puts `prompt` under the dotted `key` (``assistant.system_prompt``)
of a YAML, JSON, TOML, .env, Python or Markdown file and leaves every other byte of the file as it was:
comments, key order, quoting, blank lines. `read_prompt(path, key)` reads the value back exactly, so a
``check`` command can re-evaluate the prompt the app will really load.

How the key maps onto each format
---------------------------------
* yaml / json / toml: ``a.b.c`` is the path of nested mappings/objects/tables. Missing mappings are
  created. Provenance is a ``# promptlearn: k=v ...`` comment line just above the key (YAML, TOML; for
  a TOML key inside an inline table or a dotted key, above the line holding it), so a strict config
  schema sees no extra key. With ``provenance_as="key"`` it goes under the sibling key ``c_provenance``
  as a mapping instead (and the comment is dropped); a sibling key an earlier export wrote is kept up to
  date in comment form too. JSON has no comments: there provenance is always the sibling key.
* env: the variable name is the key upper-cased with ``.`` and ``-`` replaced by ``_``
  (``assistant.system_prompt`` -> ``ASSISTANT_SYSTEM_PROMPT``). A key that is already an env-style name
  (``SYSTEM_PROMPT``, or a name the file already defines, e.g. ``system_prompt``) is used as given.
  Provenance is a ``# promptlearn: k=v ...`` comment line just above the variable.
* py: the key's last part is the module-level variable name, as given (``prompts.SYSTEM_PROMPT`` ->
  ``SYSTEM_PROMPT``). Provenance is a ``# promptlearn: k=v ...`` comment line just above the assignment.
* md: a block between ``<!-- promptlearn:KEY -->`` and ``<!-- /promptlearn:KEY -->`` holding the prompt in
  a ```` ```text ```` fence; the fence body is the prompt followed by one newline. Provenance is a
  ``<!-- promptlearn provenance: k=v ... -->`` line inside the markers.

Known limits
------------
* .env: values are written double-quoted with ``\``, ``\"``, ``\n`` and ``\r`` escaped. ``$`` is written
  as is, because python-dotenv has no escape for it (``\$`` would be read back as a backslash and a
  dollar). python-dotenv's default interpolation rewrites ``${NAME}`` in any value; a prompt containing
  ``${`` only reads back exactly with ``dotenv_values(..., interpolate=False)`` (a warning is issued).
* YAML: the new value is spliced into the text and the result re-parsed and compared with what was
  meant. A multi-line prompt is a literal block (``|``, ``|-``, ``|+``) unless that cannot hold it
  exactly (control characters, CR, a last line of only spaces, ``|+`` before a blank line): then it is
  a double-quoted string. Values behind anchors, aliases or tags, or inside flow mappings, are written
  by a full ruamel.yaml round trip, which keeps comments and order but may re-indent the file.
* py: only top-level ``NAME = ...`` / ``NAME: T = ...`` statements count, and an existing value must
  be a string literal (an expression such as ``os.environ[...]`` is not overwritten).
* JSON: the edit is spliced into the text, so the rest of the file is kept byte for byte; JSON has no
  comments to keep. Non-standard JSON (comments, trailing commas) is rejected.

ruamel.yaml and tomlkit are imported only when a YAML or TOML file is handled.

The package has one module per format (``yaml_format``, ``json_format``, ``toml_format``, ``env_format``,
``py_format``, ``md_format``), the helpers they share in ``core`` and the entry points in ``api``.
"""

from __future__ import annotations

from promptlearn.export.api import (
    FORMATS,
    detect_format,
    export_prompt,
    prompt_sha256,
    read_prompt,
    read_prompt_text,
    read_provenance,
    read_provenance_text,
    render_export,
)
from promptlearn.export.core import PROVENANCE_FORMS
from promptlearn.export.core import ExportError, MissingKeyError
from promptlearn.export.env_format import env_name

__all__ = [
    "FORMATS",
    "PROVENANCE_FORMS",
    "ExportError",
    "MissingKeyError",
    "detect_format",
    "env_name",
    "export_prompt",
    "prompt_sha256",
    "read_prompt",
    "read_prompt_text",
    "read_provenance",
    "read_provenance_text",
    "render_export",
]
