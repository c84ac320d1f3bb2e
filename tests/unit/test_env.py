"""INVALIDATOR_* environment overrides (SPEC's table) and the DSN read from a file."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from invalidator.config import Config, load_config
from invalidator.config.env import SETTINGS
from invalidator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FILE_DSN = "postgresql://invalidator:file-secret@db:5432/app"
ENV_DSN = "postgresql://invalidator:env-secret@db:5432/app"
YAML_DSN = "postgresql://invalidator:yaml-secret@db:5432/app"

CONFIG = f"""
source:
  dsn: {YAML_DSN}
pools:
  default:
    servers: ["memcached-0.memcached:11211"]
rules:
  - table: users
    keys: ["user:{{id}}"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("INVALIDATOR_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def config_file(tmp_path: Path, text: str = CONFIG) -> str:
    return write(tmp_path / "config.yaml", text)


def error_of(path: str | None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def secret(value: Any) -> Any:
    return value.get_secret_value() if value is not None else None


# -- SPEC's variables ---------------------------------------------------------------------

OVERRIDES: list[tuple[str, str, Callable[[Config], Any], Any]] = [
    ("INVALIDATOR_DSN", ENV_DSN, lambda c: secret(c.source.dsn), ENV_DSN),
    ("INVALIDATOR_DSN_FILE", "{tmp}/dsn", lambda c: secret(c.source.dsn), FILE_DSN),
    (
        "INVALIDATOR_MEMCACHED_SERVERS",
        "m-0:11211,m-1:11211",
        lambda c: c.pools["default"].servers,
        ("m-0:11211", "m-1:11211"),
    ),
    ("INVALIDATOR_SLOT", "other_slot", lambda c: c.source.slot, "other_slot"),
    ("INVALIDATOR_HTTP_LISTEN", "127.0.0.1:9999", lambda c: c.http.listen, "127.0.0.1:9999"),
    ("INVALIDATOR_HTTP_LISTEN", "off", lambda c: (c.http.listen, c.http.enabled), ("off", False)),
    ("INVALIDATOR_LOG_FORMAT", "console", lambda c: c.log.format, "console"),
    ("INVALIDATOR_LOG_LEVEL", "debug", lambda c: c.log.level, "debug"),
]


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES]
)
def test_each_spec_variable_overrides_its_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    field: Callable[[Config], Any],
    expected: Any,
) -> None:
    """Each variable of SPEC's table replaces the file's value of its field."""
    write(tmp_path / "dsn", FILE_DSN)
    monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert field(load_config(config_file(tmp_path))) == expected


def test_invalidator_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """INVALIDATOR_CONFIG is the file read when --config is not given."""
    monkeypatch.setenv("INVALIDATOR_CONFIG", config_file(tmp_path))
    assert load_config(None).rules[0].table == "users"


def test_settings_are_specs_table() -> None:
    """The settings read are exactly SPEC's environment table."""
    assert set(SETTINGS) == {
        "INVALIDATOR_CONFIG",
        "INVALIDATOR_DSN",
        "INVALIDATOR_DSN_FILE",
        "INVALIDATOR_MEMCACHED_SERVERS",
        "INVALIDATOR_SLOT",
        "INVALIDATOR_HTTP_LISTEN",
        "INVALIDATOR_LOG_FORMAT",
        "INVALIDATOR_LOG_LEVEL",
    }


def test_names_set_by_the_image_and_manifests_are_settings() -> None:
    """Every INVALIDATOR_* name the Dockerfile and k8s/ set is one the daemon accepts."""
    found = set(re.findall(r"\b(INVALIDATOR_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    for manifest in (ROOT / "k8s").rglob("*.yaml"):
        found |= set(re.findall(r"name: (INVALIDATOR_[A-Z_]+)", manifest.read_text()))
    assert "INVALIDATOR_CONFIG" in found
    assert found <= set(SETTINGS), found - set(SETTINGS)


def test_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """invalidator_slot and Invalidator_Log_Level are the settings they spell."""
    monkeypatch.setenv("invalidator_slot", "lower_slot")
    monkeypatch.setenv("Invalidator_Log_Level", "warning")
    config = load_config(config_file(tmp_path))
    assert (config.source.slot, config.log.level) == ("lower_slot", "warning")


def test_memcached_servers_replace_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers from the environment replace the default pool's DNS discovery."""
    monkeypatch.setenv("INVALIDATOR_MEMCACHED_SERVERS", "m-0:11211")
    text = CONFIG.replace(
        'servers: ["memcached-0.memcached:11211"]', "discover: {srv: _mc._tcp.example}"
    )
    pool = load_config(config_file(tmp_path, text)).pools["default"]
    assert (pool.servers, pool.discover) == (("m-0:11211",), None)


# -- names that are not settings ----------------------------------------------------------


def test_unknown_variable_names_the_nearest_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt override is an error that suggests the setting meant."""
    monkeypatch.setenv("INVALIDATOR_MEMCACHE_SERVERS", "m-0:11211")
    assert error_of(config_file(tmp_path)) == (
        "environment: INVALIDATOR_MEMCACHE_SERVERS is not a setting "
        "(did you mean INVALIDATOR_MEMCACHED_SERVERS?)"
    )


def test_unknown_variable_far_from_any_setting_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no near setting, the error lists every setting."""
    monkeypatch.setenv("INVALIDATOR_WORKERS", "4")
    assert error_of(config_file(tmp_path)) == (
        "environment: INVALIDATOR_WORKERS is not a setting (settings: " + ", ".join(SETTINGS) + ")"
    )


def test_unknown_lowercase_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefix is case-insensitive for unknown names too; the name is shown as set."""
    monkeypatch.setenv("invalidator_slots", "x")
    assert error_of(config_file(tmp_path)) == (
        "environment: invalidator_slots is not a setting (did you mean INVALIDATOR_SLOT?)"
    )


def test_unknown_variable_error_does_not_show_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DSN under a misspelt name stays out of the error."""
    monkeypatch.setenv("INVALIDATOR_DNS", ENV_DSN)
    message = error_of(config_file(tmp_path))
    assert "INVALIDATOR_DNS is not a setting (did you mean INVALIDATOR_DSN?)" in message
    assert "env-secret" not in message


def test_unknown_variable_is_an_error_before_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt INVALIDATOR_CONFIG is reported, not replaced by the default path."""
    monkeypatch.setenv("INVALIDATOR_CONFIGFILE", config_file(tmp_path))
    assert error_of(None) == (
        "environment: INVALIDATOR_CONFIGFILE is not a setting (did you mean INVALIDATOR_CONFIG?)"
    )


def test_one_setting_in_two_cases_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVALIDATOR_SLOT and invalidator_slot together: which one wins is not guessed."""
    monkeypatch.setenv("INVALIDATOR_SLOT", "a")
    monkeypatch.setenv("invalidator_slot", "b")
    assert error_of(config_file(tmp_path)) == (
        "environment: INVALIDATOR_SLOT and invalidator_slot are both set (give one)"
    )


# -- dsn_file -----------------------------------------------------------------------------


def test_dsn_file_whitespace_and_newline_are_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mounted Secret's trailing newline (and surrounding blanks) is not part of the DSN."""
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", write(tmp_path / "dsn", f"  {FILE_DSN} \n"))
    assert secret(load_config(config_file(tmp_path)).source.dsn) == FILE_DSN


def test_dsn_file_in_yaml_is_read(tmp_path: Path) -> None:
    """source.dsn_file in the file works as INVALIDATOR_DSN_FILE does."""
    path = write(tmp_path / "dsn", FILE_DSN + "\n")
    text = CONFIG.replace(f"dsn: {YAML_DSN}", f"dsn_file: {path}")
    source = load_config(config_file(tmp_path, text)).source
    assert (secret(source.dsn), source.dsn_file) == (FILE_DSN, path)


def test_dsn_read_from_file_is_secret_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DSN read from the file is hidden like any other DSN."""
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", write(tmp_path / "dsn", FILE_DSN))
    assert "file-secret" not in repr(load_config(config_file(tmp_path)))


def test_missing_dsn_file_error_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable dsn_file is one line naming the path."""
    missing = tmp_path / "no-such-dsn"
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", str(missing))
    path = config_file(tmp_path)
    assert error_of(path) == (
        f"{path}: source: dsn_file: cannot read {missing}: No such file or directory"
    )


def test_empty_dsn_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file holding only whitespace is refused, not taken as an empty DSN."""
    empty = write(tmp_path / "dsn", " \n")
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", empty)
    path = config_file(tmp_path)
    assert error_of(path) == f"{path}: source: dsn_file: {empty} is empty"


def test_dsn_file_content_is_never_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be decoded is reported without quoting any of its bytes."""
    bad = tmp_path / "dsn"
    bad.write_bytes(b"postgresql://u:file-secret\xff@db/app")
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", str(bad))
    path = config_file(tmp_path)
    message = error_of(path)
    assert message == f"{path}: source: dsn_file: {bad} is not UTF-8 text"
    assert "secret" not in message and "xff" not in message


def test_dsn_and_dsn_file_in_yaml_is_an_error(tmp_path: Path) -> None:
    """The file giving both dsn and dsn_file is refused rather than one silently winning."""
    dsn = write(tmp_path / "dsn", FILE_DSN)
    path = config_file(tmp_path, CONFIG.replace("source:\n", f"source:\n  dsn_file: {dsn}\n"))
    assert error_of(path) == f"{path}: source: give either dsn or dsn_file, not both"


def test_dsn_and_dsn_file_in_environment_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVALIDATOR_DSN and INVALIDATOR_DSN_FILE together are refused."""
    monkeypatch.setenv("INVALIDATOR_DSN", ENV_DSN)
    monkeypatch.setenv("INVALIDATOR_DSN_FILE", write(tmp_path / "dsn", FILE_DSN))
    assert error_of(config_file(tmp_path)) == (
        "environment: INVALIDATOR_DSN and INVALIDATOR_DSN_FILE are both set (give one)"
    )


def test_environment_dsn_replaces_the_files_dsn_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment is a layer over the file: its DSN wins over the file's dsn_file."""
    text = CONFIG.replace(f"dsn: {YAML_DSN}", f"dsn_file: {tmp_path / 'never-read'}")
    monkeypatch.setenv("INVALIDATOR_DSN", ENV_DSN)
    source = load_config(config_file(tmp_path, text)).source
    assert (secret(source.dsn), source.dsn_file) == (ENV_DSN, None)


# -- the DSN stays secret -----------------------------------------------------------------

BROKEN = {
    "bad slot": ("slot: cache_invalidator", "slot: Bad-Slot"),
    "unknown source field": ("source:\n", "source:\n  dns: x\n"),
    "bad kind": ("source:\n", "source:\n  kind: logical\n"),
    "bad rule": ('keys: ["user:{id}"]', 'keys: ["user:{id"]'),
    "no pools": ("pools:\n  default:\n", "unused:\n  default:\n"),
    "dsn as the source": (
        f"source:\n  slot: cache_invalidator\n  dsn: {YAML_DSN}\n",
        f"source: {YAML_DSN}\n",
    ),
}


@pytest.mark.parametrize("where", ["yaml", "environment", "dsn_file"])
@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_dsn_never_appears_in_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, broken: str
) -> None:
    """Whatever else is wrong with the configuration, the error never shows the DSN."""
    text = CONFIG.replace("source:\n", "source:\n  slot: cache_invalidator\n")
    old, new = BROKEN[broken]
    text = text.replace(old, new, 1)
    if where == "environment":
        monkeypatch.setenv("INVALIDATOR_DSN", ENV_DSN)
    elif where == "dsn_file":
        monkeypatch.setenv("INVALIDATOR_DSN_FILE", write(tmp_path / "dsn", FILE_DSN))
    message = error_of(config_file(tmp_path, text))
    assert "secret" not in message
