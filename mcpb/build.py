"""Build the Claude Desktop bundle (dist/stripe-inbox.mcpb) with the official MCPB CLI.

The bundle is a `uv` server (manifest 0.4): it carries the project's pyproject.toml and source, and the host
installs the dependencies with uv for the user's platform. A bundle of installed packages (`python` server
type) cannot carry pydantic-core, orjson or uvloop for every platform at once.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/stripe_inbox"
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")


def package_version() -> str:
    """The one version source, read as hatch reads it: the line in the package's __init__.py."""
    text = (ROOT / PACKAGE / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no __version__ line in {PACKAGE}/__init__.py")
    return found.group(1)


def stage(staging: Path) -> Path:
    """Lay out the bundle's files in `staging`: the manifest, stamped with the version, and the project."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(ROOT / PACKAGE, staging / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    manifest = json.loads((ROOT / "mcpb" / "manifest.json").read_text())
    manifest["version"] = package_version()
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return staging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mcpb", default=str(ROOT / "node_modules" / ".bin" / "mcpb"), help="the MCPB CLI")
    parser.add_argument("--staging", default=str(ROOT / "build" / "mcpb"), type=Path)
    parser.add_argument("--out", default=str(ROOT / "dist" / "stripe-inbox.mcpb"), type=Path)
    args = parser.parse_args()
    staged = stage(args.staging)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([args.mcpb, "validate", str(staged / "manifest.json")], check=True)
    subprocess.run([args.mcpb, "pack", str(staged), str(args.out)], check=True)


if __name__ == "__main__":
    main()
