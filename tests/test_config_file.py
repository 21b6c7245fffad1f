"""The configuration file (``SECMW_CONFIG_FILE``), ``secmw config --sources`` and ``--schema``,
and the shipped ``secmw.toml``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jwt
import pytest

from secmw.cli import main
from secmw.config.check import check_settings
from secmw.config.reference import settings_reference
from secmw.config.schema import settings_schema
from secmw.config.settings import SecuritySettings
from secmw.demo import Demo, build
from secmw.errors import ConfigurationError
from secmw.tokens import mint_access_token

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "secmw.toml"
SCHEMA_FILE = ROOT / "docs" / "secmw.schema.json"
SECRET = "a-secret-of-at-least-thirty-two-bytes!!"


def use_file(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SECMW_CONFIG_FILE", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_file_values_apply_and_the_environment_overrides_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A key the environment names is overridden; its neighbours in the file still apply."""
    use_file(
        monkeypatch,
        tmp_path / "secmw.toml",
        '[rate_limit]\ndefault = "5/minute"\non_storage_error = "deny"\n'
        '[ip]\nallow = ["10.0.0.0/8"]\n',
    )
    monkeypatch.setenv("SECMW_RATE_LIMIT__DEFAULT", "7/second")
    settings = SecuritySettings()
    assert settings.rate_limit.default == "7/second"
    assert settings.rate_limit.on_storage_error == "deny"
    assert settings.ip.allow == ["10.0.0.0/8"]


def test_without_the_variable_no_file_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A secmw.toml in the working directory is not read unless SECMW_CONFIG_FILE names it."""
    (tmp_path / "secmw.toml").write_text('[rate_limit]\ndefault = "5/minute"\n')
    assert SecuritySettings().rate_limit.default == "100/minute"


def test_secret_files_work_from_the_file_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``secret_file`` in the file, or ``SECMW_JWT__SECRET_FILE`` beside it, signs tokens."""
    secret = tmp_path / "jwt-secret"
    secret.write_text(SECRET + "\n")
    use_file(monkeypatch, tmp_path / "secmw.toml", f'[jwt]\nsecret_file = "{secret}"\n')
    token = mint_access_token(SecuritySettings(), "alice")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"

    other = tmp_path / "other-secret"
    other.write_text(SECRET[::-1])
    use_file(monkeypatch, tmp_path / "secmw.toml", '[rate_limit]\ndefault = "5/minute"\n')
    monkeypatch.setenv("SECMW_JWT__SECRET_FILE", str(other))
    token = mint_access_token(SecuritySettings(), "bob")
    assert jwt.decode(token, SECRET[::-1], algorithms=["HS256"])["sub"] == "bob"


def test_pyproject_reads_the_tool_secmw_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ``pyproject.toml`` is read from its ``[tool.secmw]`` table; other tables are ignored."""
    use_file(
        monkeypatch,
        tmp_path / "pyproject.toml",
        '[project]\nname = "app"\n[tool.ruff]\nline-length = 99\n'
        '[tool.secmw.rate_limit]\ndefault = "9/minute"\n',
    )
    assert SecuritySettings().rate_limit.default == "9/minute"


def test_pyproject_without_the_table_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming a pyproject.toml with no ``[tool.secmw]`` table exits 2 saying so."""
    use_file(monkeypatch, tmp_path / "pyproject.toml", '[project]\nname = "app"\n')
    code, out, err = run(capsys, "config")
    assert (code, out) == (2, "")
    assert "no [tool.secmw] table" in err


def test_a_parse_error_names_line_and_column(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not parse exits 2 with its line and column, one line, no traceback."""
    path = use_file(monkeypatch, tmp_path / "secmw.toml", "[jwt]\nleeway = 5\n[ip\nallow = []\n")
    code, out, err = run(capsys, "config")
    assert (code, out) == (2, "")
    assert f"{path}: line 3, column 4:" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[jwt]\nsecrett = 1\n", "unknown key [jwt] secrett (did you mean [jwt] secret?)"),
        ("[rate_limt]\ndefault = '1/second'\n", "unknown key rate_limt (did you mean rate_limit?)"),
        ("secret = 'x'\n", "unknown key secret (did you mean [jwt] secret?)"),
        (
            "[rate_limit.exempt]\npath = []\n",
            "unknown key [rate_limit.exempt] path (did you mean [rate_limit.exempt] paths?)",
        ),
    ],
    ids=["in-section", "section", "wrong-table", "nested"],
)
def test_an_unknown_key_is_named_with_the_closest_one(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    expected: str,
) -> None:
    """A typo never passes silently: exit 2 naming the key and the closest valid one."""
    use_file(monkeypatch, tmp_path / "secmw.toml", text)
    code, _, err = run(capsys, "config")
    assert code == 2
    assert expected in err


def test_object_settings_keep_their_own_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An object setting's keys are values (paths), not settings: no unknown-key error."""
    use_file(monkeypatch, tmp_path / "secmw.toml", '[ip.rules."/internal/*"]\nallow = ["::1"]\n')
    assert SecuritySettings().ip.rules["/internal/*"].allow == ["::1"]


def test_an_invalid_value_in_the_file_names_the_file_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid value written in the file is named as the file writes it, not as a variable."""
    path = use_file(monkeypatch, tmp_path / "secmw.toml", '[rate_limit]\nenabled = "perhaps"\n')
    code, _, err = run(capsys, "config")
    assert code == 2
    assert f"[rate_limit] enabled in {path}: Input should be a valid boolean" in err
    assert "SECMW_RATE_LIMIT__ENABLED" not in err


def test_a_variable_that_disagrees_with_the_file_is_named_with_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The file holds a boolean, the variable something else: the error names the variable and
    the key it overrides, so the reader knows which of the two to fix."""
    path = use_file(monkeypatch, tmp_path / "secmw.toml", "[rate_limit]\nenabled = true\n")
    monkeypatch.setenv("SECMW_RATE_LIMIT__ENABLED", "maybe")
    with pytest.raises(ConfigurationError) as raised:
        SecuritySettings()
    assert str(raised.value).startswith(
        "invalid configuration: SECMW_RATE_LIMIT__ENABLED (overriding [rate_limit] enabled"
        f" in {path}): Input should be a valid boolean"
    )


def test_a_table_replaced_by_a_scalar_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A section written as a plain value in the file is an error naming that key."""
    path = use_file(monkeypatch, tmp_path / "secmw.toml", 'rate_limit = "off"\n')
    with pytest.raises(ConfigurationError, match=re.escape(f"rate_limit in {path}: ")):
        SecuritySettings()


def test_a_missing_file_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``SECMW_CONFIG_FILE`` naming nothing is a configuration error, not an empty file."""
    monkeypatch.setenv("SECMW_CONFIG_FILE", str(tmp_path / "absent.toml"))
    code, _, err = run(capsys, "config")
    assert code == 2
    assert "SECMW_CONFIG_FILE" in err
    assert "absent.toml" in err


def test_sources_name_default_file_environment_and_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``secmw config --sources`` says where each effective value came from; no secret shows."""
    secret = tmp_path / "jwt-secret"
    secret.write_text(SECRET)
    path = use_file(
        monkeypatch,
        tmp_path / "secmw.toml",
        f'[jwt]\nsecret_file = "{secret}"\n[rate_limit]\ndefault = "5/minute"\n'
        '[ip]\nallow = ["10.0.0.0/8"]\n',
    )
    monkeypatch.setenv("SECMW_IP__ALLOW", "192.0.2.0/24")
    code, out, _ = run(capsys, "config", "--sources")
    assert code == 0
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    assert lines["SECMW_RATE_LIMIT__DEFAULT"].endswith(f"# file ([rate_limit] default in {path})")
    assert lines["SECMW_IP__ALLOW"] == (
        'SECMW_IP__ALLOW = ["192.0.2.0/24"]  # environment (SECMW_IP__ALLOW)'
    )
    assert lines["SECMW_JWT__SECRET"].endswith(
        "# secret file (read at start-up from SECMW_JWT__SECRET_FILE)"
    )
    assert lines["SECMW_AUDIT__LEVEL"] == 'SECMW_AUDIT__LEVEL = "INFO"  # default'
    assert SECRET not in out


def test_the_schema_key_is_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ``$schema`` key (read by editors) is no unknown key."""
    use_file(monkeypatch, tmp_path / "secmw.toml", '"$schema" = "./s.json"\n[jwt]\nleeway = 3\n')
    assert SecuritySettings().jwt.leeway == 3


def test_schema_printed_and_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--schema`` prints the schema; ``--output`` writes the same text to a file."""
    code, out, _ = run(capsys, "config", "--schema")
    assert code == 0
    assert json.loads(out) == settings_schema()
    target = tmp_path / "schema.json"
    assert run(capsys, "config", "--schema", "--output", str(target)) == (0, "", "")
    assert target.read_text(encoding="utf-8") == out


def test_schema_to_an_unwritable_place_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output that cannot be written is one line and exit 2, no traceback."""
    target = tmp_path / "no-such-dir" / "schema.json"
    code, out, err = run(capsys, "config", "--schema", "--output", str(target))
    assert (code, out) == (2, "")
    assert err.startswith(f"secmw: cannot write the schema to {target}:")
    assert len(err.strip().splitlines()) == 1


def test_the_published_schema_is_up_to_date() -> None:
    """docs/secmw.schema.json, which editors read, equals what ``--schema`` prints."""
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == settings_schema(), (
        "run `secmw config --schema --output docs/secmw.schema.json`"
    )


def _file_data(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_the_shipped_example_validates_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """secmw.toml follows the schema, and the settings built from it pass ``secmw config``."""
    jsonschema.validate(_file_data(SHIPPED), settings_schema())
    monkeypatch.setenv("SECMW_CONFIG_FILE", str(SHIPPED))
    report = check_settings()
    assert report.effective["rate_limit"]["exempt"]["paths"] == ["/health"]


def test_the_schema_rejects_what_the_settings_reject() -> None:
    """The check above can fail: an unknown key and a wrong type are schema errors too."""
    schema = settings_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"jwt": {"secrett": "x"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rate_limit": {"enabled": "perhaps"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rate_limt": {}}, schema)


def _schema_leaves(schema: dict[str, Any]) -> dict[str, Any]:
    """Every setting the schema describes, as its variable, with its default (or None)."""
    defs = schema["$defs"]
    leaves: dict[str, Any] = {}

    def walk(node: dict[str, Any], loc: tuple[str, ...]) -> None:
        for name, prop in node["properties"].items():
            if name == "$schema":
                continue
            ref = prop.get("$ref")
            if ref is not None and ref.rpartition("/")[2].endswith(("Settings", "Exempt")):
                walk(defs[ref.rpartition("/")[2]], (*loc, name))
                continue
            leaves["SECMW_" + "__".join(p.upper() for p in (*loc, name))] = prop.get("default")

    walk(schema, ())
    return leaves


def test_the_reference_agrees_with_the_schema() -> None:
    """docs/configuration.md and the schema name the same settings with the same defaults."""
    rows = re.findall(
        r"^\| `(SECMW_[A-Z0-9_]+)` \| [^|]+ \| ([^|]*) \|", settings_reference(), re.M
    )
    reference = dict(rows)
    leaves = _schema_leaves(settings_schema())
    assert set(reference) == set(leaves)
    for variable, default in leaves.items():
        documented = reference[variable].strip()
        if documented.startswith("`"):
            assert json.loads(documented.strip("`")) == default, variable
        elif documented == "unset":
            assert default is None, variable


def test_the_demo_runs_from_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make demo CONFIG=secmw.toml``: the demo's stack enforces the file's /token limit."""
    monkeypatch.setenv("SECMW_CONFIG_FILE", str(SHIPPED))
    app = build("starlette", Demo.create())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    statuses = []

    async def post_tokens() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(11):
                reply = await client.post("/token", data={"grant_type": "nonsense"})
                statuses.append(reply.status_code)

    asyncio.run(post_tokens())
    assert statuses[:10] == [400] * 10
    assert statuses[10] == 429


def test_make_demo_passes_config(tmp_path: Path) -> None:
    """The Makefile's demo target sets SECMW_CONFIG_FILE from CONFIG (a dry run)."""
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "demo", "CONFIG=secmw.toml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"SECMW_CONFIG_FILE={SHIPPED} " in result.stdout
