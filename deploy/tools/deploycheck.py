"""Offline checks for the deployment files: Dockerfile, compose file, Kubernetes manifests.

Runnable by hand (the checks themselves live in dockerfile_check.py, compose_check.py and k8s_check.py next to
this file, and are what tests/unit/test_deploy_*.py use):

    python deploy/tools/deploycheck.py            # everything; exit 1 and one line per problem if any fails

Nothing here touches the network: hadolint and kubernetes-validate come from PyPI (dev extra), kustomize from
deploy/tools/install-validators.sh, and the compose-spec, CRD and KEDA scaler schemas are vendored in
deploy/tools/schemas/ (provenance in schemas/README.md).
"""
from __future__ import annotations

import sys

from compose_check import COMPOSE_GPU_FILE, compose_validator, load_compose, merge_compose
from deploy_common import schema_errors
from dockerfile_check import hadolint
from k8s_check import K8S_TARGETS, K8S_VERSIONS, kustomize_build, resource_id, validate_k8s


def main() -> int:
    problems: list[str] = []
    problems += [f"Dockerfile:{f['line']}: {f['code']} {f['message']}" for f in hadolint()]
    raw, doc, missing = load_compose()
    gpu_raw, gpu_doc, _ = load_compose(path=COMPOSE_GPU_FILE)
    validator = compose_validator()
    problems += [f"compose: {e}" for e in schema_errors(validator, raw) + schema_errors(validator, doc)]
    problems += [f"compose (+gpu): {e}" for e in schema_errors(validator, gpu_raw)
                 + schema_errors(validator, merge_compose(doc, gpu_doc))]
    for target in K8S_TARGETS:
        for d in kustomize_build(target):
            for version in K8S_VERSIONS:
                problems += [f"k8s {target} {resource_id(d)} @{version}: {e}" for e in validate_k8s(d, version)]
    for p in problems:
        print(p)
    print(f"deploycheck: {'OK' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
