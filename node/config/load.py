"""Load and validate the YAML configuration, reporting every error with its key path.

The file is read by :mod:`node.config.source` (one UTF-8 YAML document, no repeated key)
and validated by the models of :mod:`node.config.model`. Relative paths in the file are
resolved against the directory that holds the file, so a node started from any working
directory finds the same archive.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from node.config.model import NodeConfig
from node.config.problems import config_error
from node.config.source import read_yaml
from node.config.types import LoadContext


def parse_config(data: object, base: Path, source: Path | None = None) -> NodeConfig:
    """Validate a parsed YAML document and build the configuration, or raise ConfigError."""
    try:
        config = NodeConfig.model_validate(data, context=LoadContext(base=base))
    except ValidationError as exc:
        raise config_error(exc, source) from None
    return config.model_copy(update={"source": source})


def load_config(path: Path) -> NodeConfig:
    """Read ``path`` (one UTF-8 YAML document, no repeated key) and validate it completely."""
    return parse_config(read_yaml(path), path.resolve().parent, path)
