"""Configuration: Postee's cfg.yaml as attrs models, loaded and validated with paths."""

from postee.config.loader import ConfigError, Problem, Severity, check_config, load_config, parse_config
from postee.config.model import Config, Plugins, RouteConfig, TemplateConfig

__all__ = [
    "Config",
    "ConfigError",
    "Plugins",
    "Problem",
    "RouteConfig",
    "Severity",
    "TemplateConfig",
    "check_config",
    "load_config",
    "parse_config",
]
