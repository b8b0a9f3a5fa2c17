"""The package as people install it: the built wheel in a fresh venv, the wheel through uvx, the Claude Desktop
bundle started the way Claude Desktop starts it, and the MCP Registry's server.json."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest
from mcp import Client, StdioServerParameters

from stripe_inbox import __version__
from stripe_inbox.cli import build_parser
from stripe_inbox.settings import ENVIRONMENT

from .conftest import SECRET, cli_env, deliver, make_event, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "stripe_inbox"
MANIFEST = ROOT / "mcpb" / "manifest.json"
SERVER_JSON = ROOT / "server.json"
MCPB_CLI = ROOT / "node_modules" / ".bin" / "mcpb"
REGISTRY_SCHEMA = "v2025_12_11/server.schema.json"
INSTALL_TIMEOUT = 300  # a cold cache downloads every dependency from PyPI
SESSION_BOUND = 60

pytestmark = pytest.mark.timeout(2 * INSTALL_TIMEOUT)


def find_uv() -> Path | None:
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        return Path(found) if found else None
    return Path(find_uv_bin())


UV = find_uv()


def needs(found: object, reason: str) -> pytest.MarkDecorator:
    # `make test` installs these tools, so in CI a missing one is a failure to see, not a skip.
    return pytest.mark.skipif(not found and not os.environ.get("CI"), reason=reason)


needs_uv = needs(UV, "uv not found: `pip install uv` (the test extra has it)")
needs_mcpb = needs(MCPB_CLI.exists(), "the MCPB CLI is not in node_modules: `npm ci` (make test runs it)")


def run(command: list[str | Path], timeout: float = INSTALL_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def outside_env(db: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing points Python at this source tree."""
    env = cli_env(db, **extra) if db else {**os.environ, **extra}
    return {k: v for k, v in env.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))}


def network_settings() -> dict[str, str]:
    """What this machine needs to reach PyPI (certificates, proxies, uv's cache): a user's machine has its own."""
    return {k: v for k, v in os.environ.items() if k.startswith(("UV_", "SSL_CERT_")) or k.upper().endswith("_PROXY")}


def settings_variables() -> set[str]:
    """The environment variables stripe-inbox reads."""
    return {"STRIPE_INBOX_CONFIG", *ENVIRONMENT}


def uv_settings() -> dict[str, str]:
    # uv would download a Python from outside the package registries; the test's own interpreter does.
    return {**network_settings(), "UV_PYTHON_DOWNLOADS": "never", "UV_PYTHON": sys.executable}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist, built once per session as `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob("stripe_inbox-*.whl")
    return built


@pytest.fixture(scope="session")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and what it depends on, and nothing of this source tree."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    # The running pip installs into it, from pip's cache where it can.
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", wheel])
    return venv / "bin"


# -- one version, one package --------------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"^version\s*=", pyproject, re.MULTILINE)
    assert "version" not in json.loads(MANIFEST.read_text()), "mcpb/build.py stamps the bundle's version"
    server = json.loads(SERVER_JSON.read_text())
    # The registry's format needs the version written out: these copies must follow __init__.py.
    assert server["version"] == __version__
    assert {package["version"] for package in server["packages"]} == {__version__}


def test_dist_passes_twine_and_holds_what_runs(dist: Path, wheel: Path) -> None:
    (sdist,) = dist.glob("stripe_inbox-*.tar.gz")
    assert wheel.name == f"stripe_inbox-{__version__}-py3-none-any.whl"
    run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
    shipped = {
        f"stripe_inbox/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"stripe_inbox-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"stripe_inbox-{__version__}.dist-info/entry_points.txt").decode()
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert not [name for name in names if name.startswith("tests/")]
    assert f"Version: {__version__}" in metadata and "License-Expression: MIT" in metadata
    assert "stripe-inbox = stripe_inbox.cli:main" in entry_points
    with tarfile.open(sdist) as archive:
        top = f"stripe_inbox-{__version__}"
        sdist_names = set(archive.getnames())
    shipped_sources = {
        f"{top}/pyproject.toml",
        f"{top}/README.md",
        f"{top}/LICENSE",
        f"{top}/src/stripe_inbox/cli/__init__.py",
    }
    assert shipped_sources <= sdist_names


# -- the wheel in a fresh venv -------------------------------------------------------------------


def test_installed_wheel_runs_serve_trigger_and_mcp(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    env = outside_env(db)
    where = run([venv_bin / "python", "-c", "import stripe_inbox; print(stripe_inbox.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv_bin.parent), where.stdout
    version = run([venv_bin / "stripe-inbox", "--version"], cwd=tmp_path, env=env)
    assert version.stdout.strip() == f"stripe-inbox {__version__}"

    serve = [str(venv_bin / "stripe-inbox"), "serve", "--port", "0"]
    server = start_server(tmp_path / "inbox.db", tmp_path, env, command=serve)
    try:
        sent = run(
            [venv_bin / "stripe-inbox", "trigger", "charge.dispute.created", "--url", server.webhook_url],
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        event_id = sent.stdout.split()[0]
        assert " -> 200 " in sent.stdout
    finally:
        stop_server(server)

    params = StdioServerParameters(command=str(venv_bin / "stripe-inbox"), args=["mcp"], env=env, cwd=tmp_path)
    assert anyio.run(pending_ids, params) == [event_id]


async def pending_ids(params: StdioServerParameters) -> list[str]:
    with anyio.fail_after(SESSION_BOUND):
        async with Client(params, mode="legacy") as client:
            page = (await client.call_tool("list_events", {})).structured_content
    return [event["id"] for event in page["events"]]


# -- uvx ---------------------------------------------------------------------------------------


@needs_uv
@pytest.mark.anyio
async def test_uvx_runs_the_wheel(wheel: Path, http: httpx.AsyncClient, db_path: Path, tmp_path: Path) -> None:
    event = make_event("invoice.payment_failed")
    assert (await deliver(http, event)).status_code == 200
    assert UV is not None
    uvx = UV.with_name("uvx")
    env = {**uv_settings(), "STRIPE_WEBHOOK_SECRET": SECRET}
    version = run([uvx, "--from", wheel, "stripe-inbox", "--version"], cwd=tmp_path, env=outside_env(**env))
    assert version.stdout.strip() == f"stripe-inbox {__version__}"
    params = StdioServerParameters(
        command=str(uvx), args=["--from", str(wheel), "stripe-inbox", "mcp", "--db", str(db_path)], env=env
    )
    assert await pending_ids(params) == [event["id"]]


# -- the Claude Desktop bundle -------------------------------------------------------------------


def test_manifest_asks_for_the_database_and_the_secret() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["manifest_version"] == "0.4" and manifest["server"]["type"] == "uv"
    options = manifest["user_config"]
    assert options["database"]["required"]
    assert options["webhook_secret"]["sensitive"] and options["webhook_secret"]["required"]
    # Claude Desktop passes an optional option with no value as its literal ${user_config.…} placeholder.
    assert all("default" in option for option in options.values() if not option.get("required"))
    config = manifest["server"]["mcp_config"]
    assert "${user_config.database}" in config["args"]
    assert config["env"]["STRIPE_WEBHOOK_SECRET"] == "${user_config.webhook_secret}"


@needs_uv
@needs_mcpb
@pytest.mark.anyio
async def test_bundle_starts_as_claude_desktop_starts_it(
    http: httpx.AsyncClient, db_path: Path, tmp_path: Path
) -> None:
    event = make_event("charge.dispute.created")
    assert (await deliver(http, event)).status_code == 200
    bundle = tmp_path / "stripe-inbox.mcpb"
    run([sys.executable, ROOT / "mcpb" / "build.py", "--staging", tmp_path / "staging", "--out", bundle], timeout=120)

    installed = tmp_path / "Claude Extensions" / "local.mcpb.stripe-inbox"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(installed)
    manifest = json.loads((installed / "manifest.json").read_text())
    assert manifest["version"] == __version__
    chosen = {"database": str(db_path), "webhook_secret": SECRET}
    values = {"__dirname": str(installed)} | {
        f"user_config.{name}": chosen.get(name, option.get("default"))
        for name, option in manifest["user_config"].items()
    }

    def substitute(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda found: str(values[found.group(1)]), text)

    config = manifest["server"]["mcp_config"]
    assert config["command"] == "uv"  # Claude Desktop runs it with the uv it manages
    env = uv_settings() | {name: substitute(value) for name, value in config["env"].items()}
    # Claude Desktop installs a uv bundle's dependencies before its first start.
    run([UV, "sync", "--directory", installed], env=outside_env(**env))
    params = StdioServerParameters(command=str(UV), args=[substitute(arg) for arg in config["args"]], env=env)
    with anyio.fail_after(SESSION_BOUND):
        async with Client(params, mode="legacy") as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
            page = (await client.call_tool("list_events", {})).structured_content
    assert tools == {tool["name"] for tool in manifest["tools"]}, "the stamped manifest must name the server's tools"
    assert prompts == {prompt["name"] for prompt in manifest["prompts"]}
    assert [pending["id"] for pending in page["events"]] == [event["id"]]


# -- the MCP Registry ------------------------------------------------------------------------------


def test_server_json_follows_the_registry_schema() -> None:
    # The registry's published schema, byte for byte, as the skillsaw package ships it: no network needed.
    schema = json.loads(files("skillsaw.schemas.mcp_registry").joinpath(REGISTRY_SCHEMA).read_text())
    server = json.loads(SERVER_JSON.read_text())
    assert server["$schema"] == schema["$id"]
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    assert not list(validator.iter_errors(server)), [error.message for error in validator.iter_errors(server)]
    (package,) = server["packages"]
    assert (package["registryType"], package["identifier"], package["runtimeHint"]) == ("pypi", "stripe-inbox", "uvx")
    assert package["transport"] == {"type": "stdio"}
    assert [argument["value"] for argument in package["packageArguments"]] == ["mcp"]
    assert {variable["name"] for variable in package["environmentVariables"]} <= settings_variables()
    (remote,) = server["remotes"]
    assert remote["type"] == "streamable-http" and remote["url"].endswith("/mcp")
    assert [header["name"] for header in remote["headers"]] == ["Authorization"]


def test_server_json_passes_the_registry_publishing_rules(tmp_path: Path) -> None:
    shutil.copy(SERVER_JSON, tmp_path / "server.json")
    rules = ["--rule", "mcp-registry-server-json-valid", "--rule", "mcp-registry-version-semver"]
    run([Path(sys.executable).with_name("skillsaw"), "lint", "-q", "--no-progress", "--strict", *rules, tmp_path])


def test_readme_names_the_registry_server() -> None:
    """The registry accepts a PyPI package only if its description carries this line."""
    found = re.search(r"mcp-name: (\S+)", (ROOT / "README.md").read_text())
    if found is None:
        pytest.skip("README.md has no mcp-name line yet")
    assert found.group(1) == json.loads(SERVER_JSON.read_text())["name"]


# -- running it in production ---------------------------------------------------------------------


def test_systemd_unit_starts_serve_with_what_it_reads() -> None:
    unit = (ROOT / "examples" / "stripe-inbox.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    program, *arguments = shlex.split(exec_start)
    assert program.endswith("/bin/stripe-inbox")
    parsed = build_parser().parse_args(arguments)
    assert (parsed.command, parsed.host, parsed.port) == ("serve", "127.0.0.1", 8000)
    named = set(re.findall(r"\b(STRIPE_\w+)=", unit))
    assert named == {"STRIPE_INBOX_DB", "STRIPE_WEBHOOK_SECRET", "STRIPE_INBOX_MCP_TOKEN", "STRIPE_API_KEY"}
    assert named <= settings_variables()
