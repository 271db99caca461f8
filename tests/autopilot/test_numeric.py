"""numpy, jsonschema and the exporter come with a rollout's first computation, not with the
autopilot's modules (autopilot/numeric.py): the gateway imports those at every start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autopilot.numeric import DeferredModule

IMPORT_THEN_COMPUTE = """
import json, sys

import autopilot.controller, autopilot.evidence, autopilot.gates, autopilot.judging
import autopilot.runner, autopilot.sequential, gateway.app, gateway.rollouts

heavy = ("numpy", "jsonschema", "exporter", "httpx")
after_import = [name for name in heavy if name in sys.modules]

from autopilot.checks import check_answer
from autopilot.controller import Rollout, RolloutConfig

state = Rollout(RolloutConfig("r", "teacher", "student"), 0.0).state()
checked = check_answer(
    {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
    {"choices": [{"message": {"content": "[1]"}, "finish_reason": "stop"}]},
)
after_compute = [name for name in heavy if name in sys.modules]
print(json.dumps({"after_import": after_import, "after_compute": after_compute,
                  "checked": checked, "state": state["version"]}))
"""


def test_the_autopilot_imports_numpy_and_jsonschema_when_it_first_computes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_COMPUTE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["after_import"] == []
    assert result["after_compute"] == ["numpy", "jsonschema"]
    assert result["checked"]  # the schema was applied: the array is not an object
    assert result["state"] == 1


def test_a_deferred_module_is_the_module_once_read() -> None:
    deferred = DeferredModule("json")
    assert "not imported yet" in repr(deferred)
    assert deferred.dumps is json.dumps
    assert deferred.JSONDecodeError is json.JSONDecodeError
    assert "imported" in repr(deferred) and "not" not in repr(deferred)
