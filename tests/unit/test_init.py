"""`invalidator init` renders a starting config from catalogue facts (pure): templates
from keys, replica identity advice only where a template needs it, no password."""

from __future__ import annotations

from invalidator.commands.init import render, singular, templates
from invalidator.config import load_yaml, parse_config
from invalidator.config.env import EnvOverrides
from invalidator.sources.catalog import Catalogue, TableFacts

USERS = TableFacts(
    True,
    frozenset({"id", "email", "name"}),
    "d",
    frozenset({"id"}),
    ordered=("id", "email", "name"),
    primary_key=("id",),
    unique=(("email",),),
)
ORDERS = TableFacts(
    True,
    frozenset({"id", "user_id"}),
    "d",
    frozenset({"id"}),
    ordered=("id", "user_id"),
    primary_key=("id",),
)


def catalogue(**tables: TableFacts) -> Catalogue:
    return Catalogue(
        "15.18",
        "logical",
        True,
        {},
        {("public", name): facts for name, facts in tables.items()},
        {"public": tuple(tables)},
    )


def rendered(cat: Catalogue, *names: str, dsn: str = "postgresql://app@db/app") -> str:
    return render(
        cat, [("public", n) for n in names], dsn=dsn, kind="wal2json", servers=["mc-0:11211"]
    )


def test_templates_come_from_the_primary_key_and_unique_indexes() -> None:
    """users(id pk, email unique) → user:{id}, user_by_email:{email}."""
    assert [t.text for t in templates("users", USERS)] == [
        "user:{id}",
        "user_by_email:{email}",
    ]


def test_table_names_are_made_singular_for_key_prefixes() -> None:
    """users → user, categories → category, address stays."""
    assert [singular(n) for n in ("users", "categories", "address", "data")] == [
        "user",
        "category",
        "address",
        "data",
    ]


def test_a_template_the_identity_cannot_carry_is_commented_out_with_its_alter() -> None:
    """Under REPLICA IDENTITY DEFAULT the email template waits for REPLICA IDENTITY FULL;
    orders needs no advice."""
    text = rendered(catalogue(users=USERS, orders=ORDERS), "users", "orders")
    config = parse_config(load_yaml(text), "init", EnvOverrides())
    assert [rule.keys for rule in config.rules] == [("user:{id}",), ("order:{id}",)]
    assert '      # - "user_by_email:{email}"' in text
    assert text.count("ALTER TABLE public.users REPLICA IDENTITY FULL") == 2
    assert "ALTER TABLE public.orders" not in text


def test_with_replica_identity_full_every_template_is_active() -> None:
    """FULL carries every column: both templates, no advice."""
    full = TableFacts(
        True,
        USERS.columns,
        "f",
        USERS.columns,
        ordered=USERS.ordered,
        primary_key=("id",),
        unique=(("email",),),
    )
    text = rendered(catalogue(users=full), "users")
    config = parse_config(load_yaml(text), "init", EnvOverrides())
    assert config.rules[0].keys == ("user:{id}", "user_by_email:{email}")
    assert "ALTER TABLE" not in text


def test_the_dsn_password_is_never_printed() -> None:
    """The DSN is written without its password, with where to put it instead."""
    text = rendered(catalogue(users=USERS), "users", dsn="postgresql://app:hunter2@db/app")
    assert "hunter2" not in text
    assert 'dsn: "postgresql://app@db/app"' in text
    assert "INVALIDATOR_DSN" in text


def test_the_role_sql_grants_exactly_the_tables() -> None:
    """sql/role.sql's example grant is replaced by one per table."""
    text = rendered(catalogue(users=USERS, orders=ORDERS), "users", "orders")
    grants = [line for line in text.splitlines() if "GRANT SELECT ON TABLE" in line]
    assert grants == [
        "#   GRANT SELECT ON TABLE public.users TO invalidator;",
        "#   GRANT SELECT ON TABLE public.orders TO invalidator;",
    ]
