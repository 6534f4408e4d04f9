"""`promptlearn export RUN --to mlflow://prompts/NAME`: a run's best prompt as a new version in the MLflow Prompt
Registry, with the provenance a config export writes, as version tags (export.mlflow_registry reads them back)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from promptlearn.errors import ConfigError
from promptlearn.export.mlflow_registry import (SCHEME, TAG, _NAME, RegistryRef, _registry_error, parse_registry_uri,
                                                registry_client, to_registry_template)


@dataclass(frozen=True)
class RegistryExport:
    """What `export_to_registry` registered: the run's best prompt as a new version of a registry prompt."""

    run_id: str
    candidate_id: str
    prompt: str  #: in promptlearn's syntax (what the run scored)
    template: str  #: in the registry's syntax (what was registered)
    val: float | None
    test: float | None
    name: str
    version: int
    alias: str | None
    provenance: Mapping[str, Any]
    decoding: Mapping[str, Any] = field(default_factory=dict)
    status: str | None = None
    run_dir: Path | None = None

    @property
    def uri(self) -> str:
        return str(RegistryRef(self.name, version=self.version))


def provenance_tags(prov: Mapping[str, Any]) -> dict[str, str]:
    """Provenance as prompt version tags: `promptlearn.<key>`, strings as they are, everything else as JSON."""
    return {TAG + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in prov.items()}


def export_to_registry(run: str | Path, to: str, *, alias: str | None = None, root: str | Path = "runs",
                       tracking_uri: str | None = None, store: str | Path | None = None) -> RegistryExport:
    """Register the best prompt of `run` as a new version of the prompt `to` (mlflow://prompts/NAME) with the
    provenance a config export writes (run id, val, test, sha256, decoding), and point `alias` at it."""
    from promptlearn.gate import best_of_run, make_provenance
    from promptlearn.store.locate import locate_run

    ref = parse_registry_uri(to)
    if ref.alias is not None or ref.version is not None:
        raise ConfigError(f"export to {SCHEME}{ref.name} (a new version is made); move an alias with --alias")
    if alias is not None and (not _NAME.fullmatch(alias) or alias == "latest"):
        raise ConfigError(f"bad alias {alias!r}: letters, digits, _ . - (and not 'latest', which MLflow keeps)")
    run_id, cid, prompt, val, test, decoding = best_of_run(run, root, store=store)
    located = locate_run(run, store=store, root=root)
    try:
        rs = located.open()
        try:
            status, tracked = rs.get_meta("status"), rs.get_meta("mlflow") or {}
        finally:
            rs.close()
    finally:
        located.close()
    template = to_registry_template(prompt)
    prov = make_provenance(run_id, val, test, prompt, decoding)
    tags = {**provenance_tags(prov), TAG + "candidate_id": cid, TAG + "status": str(status)}
    if tracked.get("run_id"):
        tags[TAG + "mlflow_run_id"] = tracked["run_id"]
    client = registry_client(tracking_uri)
    score = " ".join(f"{k} {v:.4f}" for k, v in (("val", val), ("test", test)) if v is not None)
    try:
        version = client.register_prompt(ref.name, template, commit_message=f"promptlearn run {run_id} ({score})",
                                         tags=tags)
        if alias:
            client.set_prompt_alias(ref.name, alias, version.version)
    except Exception as e:  # noqa: BLE001 (MLflow and requests errors alike: one line)
        raise _registry_error(f"cannot register {ref} at the MLflow registry", e) from None
    if tracked.get("run_id"):
        try:  # the registry's own link to the tracking run, where that run lives on the same server
            client.link_prompt_version_to_run(tracked["run_id"], version)
        except Exception:  # noqa: BLE001 (a tracking run on another server: the tag above still links them)
            pass
    return RegistryExport(run_id, cid, prompt, template, val, test, ref.name, int(version.version), alias, prov,
                          decoding, status, located.files_dir)


