"""Validates rendered Kubernetes manifests offline: built-in kinds against the JSON schemas of one Kubernetes
version (PyPI `kubernetes-validate`, strict: unknown fields are errors), KEDA's kinds against the OpenAPI schema of
KEDA's CRDs (config/crd/bases of the Go module github.com/kedacore/keda/v2), made strict the same way.

    validate.py --kube-version 1.34.0 --keda-crds <dir> FILE... ("-": stdin)

Exit 0 when every document is valid; 1 with one line per error otherwise (an unknown kind is an error too).
Run by deploy/helm/check.sh with the interpreter of var/helm/venv (kubernetes-validate, jsonschema, PyYAML).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KEDA_GROUP = "keda.sh"


def strict_schema(schema: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as a JSON schema that refuses unknown fields and honours
    `x-kubernetes-int-or-string` (the API server prunes unknown fields silently; here they are errors)."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if result.pop("x-kubernetes-int-or-string", False):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def keda_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema, for every KEDA CRD in `crd_dir`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # apiVersion, kind and metadata are the API server's: typed here as it would check them.
                schema.setdefault("properties", {})
                schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
                schema["properties"]["kind"] = {"const": kind}
                schema["properties"]["metadata"] = {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
                }
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
                strict = strict_schema(schema)
                strict["properties"]["metadata"]["additionalProperties"] = True
                schemas[(f"{group}/{version['name']}", kind)] = strict
    if not schemas:
        raise SystemExit(f"no KEDA CRD found in {crd_dir}")
    return schemas


def validate_document(
    document: dict[str, Any], kube_version: str, keda: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    """The errors of one manifest (empty: valid)."""
    api_version = str(document.get("apiVersion", ""))
    kind = str(document.get("kind", ""))
    name = str((document.get("metadata") or {}).get("name", "?"))
    where = f"{kind}/{name}"
    if api_version.split("/")[0] == KEDA_GROUP:
        schema = keda.get((api_version, kind))
        if schema is None:
            return [f"{where}: no KEDA schema for {api_version} {kind}"]
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{where}: {'.'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
        ]
    try:
        kubernetes_validate.validate(document, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path) or "(root)"
        return [f"{where}: {path}: {error.message} (Kubernetes {error.version})"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{where}: {error.message}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube-version", required=True, help="e.g. 1.34.0")
    parser.add_argument("--keda-crds", required=True, type=Path, help="KEDA's config/crd/bases directory")
    parser.add_argument("files", nargs="+", help="rendered manifests ('-': stdin)")
    args = parser.parse_args(argv)
    keda = keda_schemas(args.keda_crds)
    errors: list[str] = []
    count = 0
    for file in args.files:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            count += 1
            if not isinstance(document, dict):
                errors.append(f"{file}: a document is not a mapping")
                continue
            errors.extend(f"{file}: {error}" for error in validate_document(document, args.kube_version, keda))
    for error in errors:
        print(f"INVALID {error}")
    if count == 0:
        print("INVALID no manifest to validate")
        return 1
    print(
        f"{count} manifest(s), {len(errors)} error(s): Kubernetes {args.kube_version} schemas"
        f" (kubernetes-validate {kubernetes_validate.__version__}), KEDA CRDs of {args.keda_crds}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
