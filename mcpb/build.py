"""Build the Claude Desktop bundle (dist/stripe-inbox.mcpb) with the official MCPB CLI.

The bundle is a `uv` server (manifest 0.4): it carries the project's pyproject.toml and source, and the host
installs the dependencies with uv for the user's platform. A bundle of installed packages (`python` server
type) cannot carry pydantic-core, orjson or uvloop for every platform at once.

The manifest's `tools` and `prompts` are stamped from the live server, so a tool is named only where it is
declared, and the bundle can never list a tool the server lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from stripe_inbox import Settings, open_inbox
from stripe_inbox.mcp import create_mcp_server

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


def first_sentence(description: str) -> str:
    """A manifest describes every installation, so it keeps a description's first sentence without its asides in
    parentheses: there the server names what one configuration has (its channels, its destinations)."""
    first = re.split(r"(?<=\.)\s", description.strip(), maxsplit=1)[0]
    return re.sub(r"\s*\([^)]*\)", "", first)


async def live_surface() -> dict[str, list[dict[str, Any]]]:
    """The tools and prompts the server offers, listed by the official client from a server over an empty inbox
    with the default settings: neither this shell's variables nor a stripe-inbox.toml here change them."""
    for name in [name for name in os.environ if name.startswith("STRIPE_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as folder:
        async with (
            open_inbox(Settings(db=str(Path(folder) / "inbox.db"))) as inbox,
            Client(create_mcp_server(inbox)) as client,
        ):
            tools = (await client.list_tools()).tools
            prompts = (await client.list_prompts()).prompts
    return {
        "tools": [{"name": tool.name, "description": first_sentence(tool.description or "")} for tool in tools],
        "prompts": [_prompt_entry(prompt.name, prompt.description or "", prompt.arguments or []) for prompt in prompts],
    }


def _prompt_entry(name: str, description: str, arguments: list[Any]) -> dict[str, Any]:
    """The manifest's form of a prompt: its text is what the host may show, with the arguments in its syntax."""
    described = first_sentence(description)
    names = [argument.name for argument in arguments]
    given = ", ".join(f"{argument}: ${{arguments.{argument}}}" for argument in names)
    text = f"{described.removesuffix('.')} ({given})." if names else described
    return {"name": name, "description": described} | ({"arguments": names} if names else {}) | {"text": text}


def stamped_manifest() -> dict[str, Any]:
    """mcpb/manifest.json with what only the code knows: the version, the tools and the prompts."""
    manifest: dict[str, Any] = json.loads((ROOT / "mcpb" / "manifest.json").read_text())
    manifest["version"] = package_version()
    manifest.update(anyio.run(live_surface))
    return manifest


def stage(staging: Path) -> Path:
    """Lay out the bundle's files in `staging`: the stamped manifest and the project."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(ROOT / PACKAGE, staging / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    manifest = stamped_manifest()
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
