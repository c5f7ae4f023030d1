#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against Kubernetes' own schemas with kubernetes-validate (PyPI;
# it bundles the schemas, so nothing else is fetched), in a throw-away virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q kubernetes-validate
"$venv/bin/kubernetes-validate" --strict deploy/k8s/*.yaml
