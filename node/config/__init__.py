"""Configuration: the typed model and its validating YAML loader."""

from node.config.load import ae_title_problem, load_config, parse_config
from node.config.model import (
    ALL_ROLES,
    AcquisitionConfig,
    ClientTLS,
    LocalNode,
    MacAlgorithm,
    NodeConfig,
    Peer,
    RemoteAE,
    RetryPolicy,
    Role,
    SigningConfig,
    StorageConfig,
    TLSConfig,
)

__all__ = [
    "ALL_ROLES",
    "AcquisitionConfig",
    "ClientTLS",
    "LocalNode",
    "MacAlgorithm",
    "NodeConfig",
    "Peer",
    "RemoteAE",
    "RetryPolicy",
    "Role",
    "SigningConfig",
    "StorageConfig",
    "TLSConfig",
    "ae_title_problem",
    "load_config",
    "parse_config",
]
