from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import pyarrow as pa, pyarrow.compute as pc
from exporter.no_pandas import keep_pandas_out, let_pandas_in
finder = keep_pandas_out()
pc.equal(pa.array(["a", "b"]), "a")  # pyarrow looks for pandas here
assert "pandas" not in sys.modules, "pyarrow imported pandas"
try:
    import pandas
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("pandas imported")
let_pandas_in(finder)
import pandas
print("ok")
"""


def test_pandas_is_kept_out_while_asked_and_comes_back_after() -> None:
    pytest.importorskip("pandas")  # the training extra brings it
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
