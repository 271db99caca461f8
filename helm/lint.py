"""Lint the Helm chart, render it with each values file, validate every manifest.

    python helm/lint.py

For each values case (the chart's defaults and helm/gateway/ci/*-values.yaml): ``helm lint
--strict`` through Helm's Go SDK (helm-python-sdk, no helm binary), a render as ``helm
template`` does, and a strict schema check of every rendered object against the Kubernetes
versions of tests/helm/rendering.py (kubernetes-validate). Exits 1 when anything is wrong.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    try:
        from tests.helm import rendering
    except ImportError as exc:
        print(
            f"helm/lint.py: {exc.name} is not installed "
            "(pip install -e '.[dev]': helm-python-sdk, kubernetes-validate)",
            file=sys.stderr,
        )
        return 2
    import helm_python

    started = time.monotonic()
    versions = rendering.kubernetes_versions()
    problems: list[str] = []
    objects = 0
    for case, values in rendering.values_cases().items():
        problems += [f"[{case}] lint: {finding}" for finding in rendering.lint(values)]
        try:
            manifests = rendering.render(values)
        except helm_python.HelmError as exc:
            problems.append(f"[{case}] render: {exc}")
            continue
        for manifest in manifests:
            for version in versions:
                problems += [f"[{case}] {p}" for p in rendering.schema_problems(manifest, version)]
        objects += len(manifests)
        kinds = ", ".join(sorted({m.kind for m in manifests}))
        print(f"{case}: {len(manifests)} objects ({kinds})")
    for problem in problems:
        print(problem)
    verdict = f"{len(problems)} problem(s)" if problems else "all valid"
    print(
        f"helm chart {rendering.CHART.relative_to(rendering.REPO)}: {objects} objects rendered, "
        f"checked against Kubernetes {', '.join(versions)}: {verdict} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
