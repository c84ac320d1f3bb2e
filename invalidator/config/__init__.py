"""Configuration: the YAML file of SPEC plus ``INVALIDATOR_*`` environment overrides.

Models are immutable and reject unknown fields. ``load_config`` turns every problem into
one ``ConfigError`` whose lines each name the file, the rule (index and table) and the
field at fault.

``fields``  shared field types: durations, key templates, the strict base model
``pools``   the memcached pools (servers, discovery, placement)
``model``   source, rules, warm-up queries, audit, http, log and the whole ``Config``
``env``     the ``INVALIDATOR_*`` overrides and how they are applied
``load``    YAML reading, validation, error rendering: ``load_config``, ``parse_config``
``rules``   the validated rules compiled for the core
"""

from invalidator.config.env import ENV_PREFIX, EnvOverrides
from invalidator.config.fields import Duration, KeyTemplate, StrictModel, parse_duration
from invalidator.config.load import (
    DEFAULT_CONFIG_PATH,
    config_path,
    load_config,
    load_yaml,
    parse_config,
)
from invalidator.config.model import (
    NO_DSN,
    Action,
    AuditConfig,
    ChangeOp,
    Config,
    HttpConfig,
    LogConfig,
    RuleConfig,
    SourceConfig,
    ValueConfig,
    WarmConfig,
)
from invalidator.config.pools import HASHING, DiscoverConfig, PoolConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "HASHING",
    "NO_DSN",
    "Action",
    "AuditConfig",
    "ChangeOp",
    "Config",
    "DiscoverConfig",
    "Duration",
    "EnvOverrides",
    "HttpConfig",
    "KeyTemplate",
    "LogConfig",
    "PoolConfig",
    "RuleConfig",
    "SourceConfig",
    "StrictModel",
    "ValueConfig",
    "WarmConfig",
    "config_path",
    "load_config",
    "load_yaml",
    "parse_config",
    "parse_duration",
]
