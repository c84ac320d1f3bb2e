"""Configuration: SPEC's schema, env overrides, one clear line per problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from invalidator.config import load_config, parse_duration
from invalidator.config.build import node_addresses
from invalidator.errors import ConfigError

VALID = """
source:
  dsn: postgresql://invalidator:pw@db:5432/app
pools:
  default:
    servers: ["memcached-0.memcached:11211", "memcached-1.memcached:11211"]
rules:
  - table: users
    keys: ["user:{id}", "user_by_email:{email}"]
  - table: products
    keys: ["product:{id}"]
    action: refresh
    value: {json: [id, name, price]}
    ttl: 1800
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No INVALIDATOR_* variable of the caller's shell (any case) reaches these tests."""
    for name in list(os.environ):
        if name.upper().startswith("INVALIDATOR_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_spec_example_loads_with_defaults(tmp_path: Path) -> None:
    """SPEC's example parses; schema, on and action take their documented defaults."""
    config = load_config(write(tmp_path, VALID))
    rule = config.rules[0]
    assert (rule.schema_name, rule.on, rule.action, rule.pool) == (
        "public",
        ("insert", "update", "delete"),
        "delete",
        "default",
    )
    assert config.source.slot == "cache_invalidator"


def test_unknown_field_names_file_rule_and_field(tmp_path: Path) -> None:
    """A typo in a rule is an error naming file, rule index, table and field."""
    path = write(tmp_path, VALID.replace("    ttl: 1800", "    tll: 1800"))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): tll: unknown field (did you mean 'ttl'?)"
    )


def test_bad_template_names_the_key_index(tmp_path: Path) -> None:
    """An unclosed brace points at the rule and the key template."""
    path = write(tmp_path, VALID.replace('"product:{id}"', '"product:{id"'))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): keys[0]: "
        "unclosed '{' at position 8 in 'product:{id'"
    )


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    """YAML syntax errors are located, with no traceback text."""
    path = write(tmp_path, "rules: [\n  - table: x\n")
    assert error_of(path) == (f"{path}:2:3: invalid YAML: expected the node content, but found '-'")


def test_rule_on_unknown_pool_is_an_error(tmp_path: Path) -> None:
    """A rule's pool must be defined."""
    path = write(tmp_path, VALID + "  - table: t\n    keys: [x]\n    pool: sessions\n")
    assert error_of(path) == (
        f"{path}: rules[2] (table public.t): pool: unknown pool 'sessions' (pools: default)"
    )


def test_refresh_without_value_is_an_error(tmp_path: Path) -> None:
    """refresh needs something to write."""
    path = write(tmp_path, VALID.replace("    value: {json: [id, name, price]}\n", ""))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): action 'refresh' needs 'value'"
    )


def test_value_on_a_bump_rule_is_an_error(tmp_path: Path) -> None:
    """A bump rule's keys are counters: a value there cannot say what the app stores."""
    rule = "  - table: t\n    keys: [gen]\n    action: bump\n    value: {json: [id]}\n"
    path = write(tmp_path, VALID + rule)
    assert error_of(path) == (
        f"{path}: rules[2] (table public.t): 'value' does not apply to action 'bump' "
        "(its keys hold counters)"
    )


def test_value_on_a_delete_rule_says_what_the_app_stores(tmp_path: Path) -> None:
    """On a delete rule, value is accepted (audit reads it)."""
    rule = "  - table: t\n    keys: ['t:{id}']\n    value: {json: [id, name]}\n"
    config = load_config(str(write(tmp_path, VALID + rule)))
    assert config.rules[2].value is not None and config.rules[2].action == "delete"


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    """No config file: one line that mentions --config and INVALIDATOR_CONFIG."""
    path = str(tmp_path / "nope.yaml")
    assert error_of(path) == f"{path}: no such file (give --config or INVALIDATOR_CONFIG)"


def test_environment_overrides_dsn_servers_and_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVALIDATOR_* variables replace the file's values; servers use the apps' format."""
    monkeypatch.setenv("INVALIDATOR_DSN", "postgresql://u:other@db2/app")
    monkeypatch.setenv("INVALIDATOR_MEMCACHED_SERVERS", "m-0:11211, m-1:11211")
    monkeypatch.setenv("INVALIDATOR_SLOT", "other_slot")
    config = load_config(write(tmp_path, VALID))
    assert config.source.dsn is not None
    assert config.source.dsn.get_secret_value() == "postgresql://u:other@db2/app"
    assert config.pools["default"].servers == ("m-0:11211", "m-1:11211")
    assert config.source.slot == "other_slot"


def test_invalidator_config_variable_locates_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVALIDATOR_CONFIG is used when --config is absent."""
    monkeypatch.setenv("INVALIDATOR_CONFIG", write(tmp_path, VALID))
    assert len(load_config(None).rules) == 2


def test_dsn_is_secret_in_repr(tmp_path: Path) -> None:
    """The DSN never shows in the config's repr."""
    assert "pw@" not in repr(load_config(write(tmp_path, VALID)))


def _pool(tmp_path: Path, extra: str, servers: str | None = None) -> str:
    """VALID with the default pool's servers replaced and ``extra`` lines added to it."""
    text = VALID
    if servers is not None:
        start = text.index("servers: [")
        end = text.index("]", start) + 1
        text = text[:start] + f"servers: {servers}" + text[end:]
    anchor = text.index("]", text.index("servers: ")) + 1
    return write(
        tmp_path,
        text[:anchor] + "".join(f"\n    {line}" for line in extra.splitlines()) + text[anchor:],
    )


def test_older_hashing_ketama_means_pylibmc_with_ketama(tmp_path: Path) -> None:
    """`hashing: ketama` keeps working: it is `client: pylibmc, behaviors: {ketama: true}`."""
    pool = load_config(_pool(tmp_path, "hashing: ketama")).pools["default"]
    assert (pool.client, dict(pool.behaviors)) == ("pylibmc", {"ketama": True})


def test_older_hashing_modula_means_pylibmc_defaults(tmp_path: Path) -> None:
    """`hashing: modula` is pylibmc with libmemcached's defaults."""
    pool = load_config(_pool(tmp_path, "hashing: modula")).pools["default"]
    assert (pool.client, dict(pool.behaviors)) == ("pylibmc", {})


def test_hashing_that_contradicts_client_is_refused(tmp_path: Path) -> None:
    """Two settings that disagree on whose placement to copy: neither wins silently."""
    path = _pool(tmp_path, "hashing: ketama\nclient: pymemcache")
    assert error_of(path).startswith(
        f"{path}: pools.default: hashing: ketama means client: pylibmc"
    )


def test_client_defaults_to_pymemcache(tmp_path: Path) -> None:
    """No client, no hashing: pymemcache's HashClient, as before."""
    pool = load_config(write(tmp_path, VALID)).pools["default"]
    assert (pool.client, dict(pool.behaviors)) == ("pymemcache", {})


def test_unknown_client_lists_the_known_ones(tmp_path: Path) -> None:
    """A typo names every accepted client."""
    path = _pool(tmp_path, "client: pylibmcc")
    assert error_of(path).startswith(
        f"{path}: pools.default.client: unknown client 'pylibmcc' (known: pymemcache, pylibmc,"
    )


def test_server_weights_in_both_forms(tmp_path: Path) -> None:
    """`"host:port N"` and `{server, weight}` entries; the node keeps its host:port name."""
    path = _pool(
        tmp_path,
        "client: pylibmc\nbehaviors: {ketama: true}",
        servers='["m-0:11211 2", {server: "m-1:11211", weight: 3}]',
    )
    pool = load_config(path).pools["default"]
    assert pool.servers == ("m-0:11211 2", "m-1:11211 3")
    assert node_addresses(load_config(path)) == {
        "m-0:11211": ("m-0", 11211),
        "m-1:11211": ("m-1", 11211),
    }


def test_weights_for_a_client_without_weights_are_refused(tmp_path: Path) -> None:
    """pymemcache takes no weights: an error, never ignored."""
    path = _pool(tmp_path, "", servers='["m-0:11211 2", "m-1:11211"]')
    assert error_of(path) == (
        f"{path}: pools.default: client pymemcache takes no server weights (got 'm-0:11211 2')"
    )


def test_an_option_that_changes_placement_and_is_not_reproduced_is_named(tmp_path: Path) -> None:
    """pylibmc's random distribution cannot be followed: the error names it."""
    path = _pool(tmp_path, "client: pylibmc\nbehaviors: {distribution: random}")
    assert "behaviors.distribution: distribution random" in error_of(path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("250ms", 0.25), ("2m", 120.0), (3, 3.0)]
)
def test_durations_accept_units(text: str | int, seconds: float) -> None:
    """Durations take ms, s, m, h or bare seconds."""
    assert parse_duration(text) == seconds


def test_on_is_a_field_not_a_yaml_boolean(tmp_path: Path) -> None:
    """`on:` and `off`-like words keep their text meaning (YAML 1.2 booleans only)."""
    config = load_config(
        write(
            tmp_path,
            VALID.replace(
                '    keys: ["user:{id}", "user_by_email:{email}"]',
                '    on: [delete]\n    keys: ["user:{id}", "user_by_email:{email}"]',
            ),
        )
    )
    assert config.rules[0].on == ("delete",)


def test_unknown_ttl_policy_is_an_error(tmp_path: Path) -> None:
    """A rule naming a TTL policy its pool does not define: one line, with the known ones."""
    path = write(tmp_path, VALID.replace("    ttl: 1800", "    ttl: catalogue"))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): ttl: unknown TTL policy 'catalogue' "
        "of pool 'default' (none defined)"
    )


def test_truncate_policy_needs_truncate_in_on(tmp_path: Path) -> None:
    """`truncate:` without `on: [truncate]` is refused rather than silently ignored."""
    path = write(tmp_path, VALID.replace("    ttl: 1800", "    ttl: 1800\n    truncate: flush"))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): 'truncate' applies to truncates but "
        "'on' has no 'truncate'"
    )


@pytest.mark.parametrize("listen", ["off", "OFF", "'off'"])
def test_http_listen_off_turns_the_server_off(tmp_path: Path, listen: str) -> None:
    """`http: {listen: off}` (a word, not a YAML boolean; any case): no HTTP server."""
    config = load_config(write(tmp_path, VALID + f"http:\n  listen: {listen}\n"))
    assert (config.http.listen, config.http.enabled) == ("off", False)


def test_http_listen_address_keeps_the_server_on(tmp_path: Path) -> None:
    """The default and a loopback address serve HTTP; a malformed one is a config error."""
    assert load_config(write(tmp_path, VALID)).http.enabled
    on = load_config(write(tmp_path, VALID + "http:\n  listen: 127.0.0.1:9464\n"))
    assert (on.http.listen, on.http.enabled) == ("127.0.0.1:9464", True)
    assert "http.listen" in error_of(write(tmp_path, VALID + "http:\n  listen: ':x'\n"))


def test_a_misspelt_field_suggests_the_real_one_instead_of_calling_it_missing(
    tmp_path: Path,
) -> None:
    """`kyes` names `keys`, and `keys` is not also reported as a missing field."""
    path = write(tmp_path, VALID.replace('keys: ["product:{id}"]', 'kyes: ["product:{id}"]'))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): kyes: unknown field (did you mean 'keys'?)"
    )


def test_an_unknown_field_far_from_any_lists_the_valid_ones(tmp_path: Path) -> None:
    """Nothing close: the fields valid at that place are listed."""
    path = write(tmp_path, VALID + "log: {colour: blue}\n")
    assert error_of(path) == f"{path}: log.colour: unknown field (valid: format, level)"


def test_errors_name_the_full_field_path_inside_a_value(tmp_path: Path) -> None:
    """A bad item of `value.json` is located down to its index."""
    path = write(tmp_path, VALID.replace("json: [id, name, price]", "json: [id, name, 3]"))
    assert error_of(path) == (
        f"{path}: rules[1] (table public.products): value.json[2]: Input should be a valid string"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Unknown pools of several rules and warm entries: one line each, not only the first."""
    path = write(
        tmp_path,
        "pools: {default: {servers: ['a:1']}}\n"
        "rules: [{table: a, keys: [k], pool: x}, {table: b, keys: [k], pool: y}]\n"
        "warm: [{query: q, key: k, value: {json: [a]}, pool: z}]\n",
    )
    assert error_of(path).splitlines() == [
        f"{path}: warm[0]: pool: unknown pool 'z'",
        f"{path}: rules[0] (table public.a): pool: unknown pool 'x' (pools: default)",
        f"{path}: rules[1] (table public.b): pool: unknown pool 'y' (pools: default)",
    ]


def test_every_problem_of_one_rule_is_reported_at_once(tmp_path: Path) -> None:
    """A rule with two inconsistent fields: both are named."""
    path = write(
        tmp_path,
        "pools: {default: {servers: ['a:1']}}\n"
        "rules: [{table: a, keys: [k], on: [insert], when_changed: [b], truncate: flush}]\n",
    )
    assert error_of(path).splitlines() == [
        f"{path}: rules[0] (table public.a): 'when_changed' applies to updates but 'on' has"
        " no 'update'",
        f"{path}: rules[0] (table public.a): 'truncate' applies to truncates but 'on' has no"
        " 'truncate'",
    ]


def test_http_listen_port_zero_means_any_free_port(tmp_path: Path) -> None:
    """`127.0.0.1:0` is a valid listen address (the kernel picks the port)."""
    path = write(tmp_path, VALID + "http: {listen: '127.0.0.1:0'}\n")
    assert load_config(path).http.listen == "127.0.0.1:0"


def test_replicas_with_the_notify_source_are_a_config_error(tmp_path: Path) -> None:
    """The notify source has no commit LSN for a replica's replay to be compared with."""
    message = error_of(
        write(
            tmp_path,
            """
source: {kind: notify, dsn: "postgresql://u@db/app"}
pools:
  default:
    servers: ["127.0.0.1:11211"]
    replicas: ["postgresql://u:hunter2pw@replica/app"]
rules: [{table: users, keys: ["user:{id}"]}]
""",
        )
    )
    assert "pools.default.replicas: needs a logical replication source" in message
    assert "hunter2pw" not in message


def test_replica_dsns_are_secrets_and_a_duplicate_is_an_error(tmp_path: Path) -> None:
    message = error_of(
        write(
            tmp_path,
            """
source: {dsn: "postgresql://u@db/app"}
pools:
  default:
    servers: ["127.0.0.1:11211"]
    replicas: ["postgresql://u:hunter2pw@replica/app", "postgresql://u:hunter2pw@replica/app"]
rules: [{table: users, keys: ["user:{id}"]}]
""",
        )
    )
    assert "a replica is listed twice" in message
    assert "hunter2pw" not in message


def test_a_replica_dsn_can_come_from_a_mounted_secret_file(tmp_path: Path) -> None:
    """``{dsn_file: PATH}``: the password stays out of the config file (a ConfigMap)."""
    secret = tmp_path / "replica-dsn"
    secret.write_text("postgresql://u:hunter2pw@replica-1/app\n")
    config = load_config(
        write(
            tmp_path,
            f"""
source: {{dsn: "postgresql://u@db/app"}}
pools:
  default:
    servers: ["127.0.0.1:11211"]
    replicas: [{{dsn_file: "{secret}"}}]
rules: [{{table: users, keys: ["user:{{id}}"]}}]
""",
        )
    )
    (replica,) = config.pools["default"].replicas
    assert replica.get_secret_value() == "postgresql://u:hunter2pw@replica-1/app"
    assert "hunter2pw" not in repr(config)


def test_an_unreadable_replica_dsn_file_names_the_file_not_its_content(tmp_path: Path) -> None:
    message = error_of(
        write(
            tmp_path,
            """
source: {dsn: "postgresql://u@db/app"}
pools:
  default:
    servers: ["127.0.0.1:11211"]
    replicas: [{dsn_file: /nonexistent/replica-dsn}]
rules: [{table: users, keys: ["user:{id}"]}]
""",
        )
    )
    assert "pools.default.replicas" in message and "/nonexistent/replica-dsn" in message
