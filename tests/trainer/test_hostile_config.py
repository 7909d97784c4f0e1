"""`tuneloop-train --config` on hostile files: exit 2 and one line, never a traceback (issue 13).

Run as the real console command with TUNELOOP_TERMINATION_LOG set, as it always is in a pod
(a lone surrogate used to escape while writing that file).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from trainer_testkit import spec_for

GOOD = spec_for("sequence-classification", "s3://b/models/m", "s3://b/data/train.jsonl", "s3://b/out/x")


def json_text(spec: dict) -> str:
    return json.dumps(spec)


CASES = [
    # (id, file name, content, expected in the last line)
    ("bad-utf8", "c.yaml", b"task: \xff\xfe\n", "is not UTF-8 text"),
    ("deep-yaml", "c.yaml", ("task: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nests deeper than"),
    ("deep-json", "c.json", ('{"task": ' + "[" * 3000 + "]" * 3000 + "}").encode(), "nests deeper than"),
    ("huge-int", "c.json", json_text({**GOOD, "training": {"learningRate": 10**400}}).encode(), "64-bit"),
    ("huge-int-yaml", "c.yaml", ("training:\n  learningRate: 1" + "0" * 400 + "\n").encode(), "64-bit"),
    ("nan", "c.json", json_text(GOOD).replace('"model"', '"nan": NaN, "model"').encode(), "NaN is not a number"),
    ("surrogate-key", "c.json", json_text(GOOD).replace('"model"', '"\\ud800": 1, "model"').encode(), "invalid Unicode"),
    ("secret-key-ref-int", "c.json", json_text({**GOOD, "env": [{"name": "A", "valueFrom": {"secretKeyRef": 5}}]}).encode(),
     "spec.env[0].valueFrom"),
    ("alias-bomb", "c.yaml", ("a0: &a0 [0,0,0,0,0,0,0,0,0]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 9) + "]\n" for i in range(1, 9))).encode(), "more than"),
    ("two-documents", "c.yaml", b"task: a\n---\ntask: b\n", "holds 2 YAML documents"),
    ("too-large", "c.yaml", b"task: " + b"x" * (4 * 1024 * 1024) + b"\n", "Tuneloop reads at most"),
]


@pytest.mark.parametrize("name, content, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_config_exits_2_with_one_line(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    config = tmp_path / name
    config.write_bytes(content)
    termination = tmp_path / "termination-log"
    env = {**os.environ, "TUNELOOP_TERMINATION_LOG": str(termination), "TUNELOOP_METRICS_PORT": "0"}
    proc = subprocess.run(["tuneloop-train", "--config", str(config)], capture_output=True, text=True, errors="replace",
                          env=env, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tuneloop-train: error: "), proc.stderr
    assert expected in lines[0]
    assert termination.read_text().strip() == lines[0]
