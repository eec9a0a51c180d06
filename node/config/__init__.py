"""Configuration: the typed pydantic models and their validating YAML loader."""

from node.config.choices import ALL_ROLES, MacAlgorithm, Role, SendTrigger
from node.config.load import load_config, parse_config
from node.config.model import (
    AcquisitionConfig,
    ClientTLS,
    HttpConfig,
    LocalNode,
    LoggingConfig,
    ManifestsConfig,
    NodeConfig,
    Peer,
    RemoteAE,
    ReportingConfig,
    ReportingPerson,
    RetryPolicy,
    SendRule,
    SigningConfig,
    StorageConfig,
    TLSConfig,
    TransfersConfig,
)
from node.config.types import ae_title_problem

__all__ = [
    "ALL_ROLES",
    "AcquisitionConfig",
    "ClientTLS",
    "HttpConfig",
    "LocalNode",
    "LoggingConfig",
    "MacAlgorithm",
    "ManifestsConfig",
    "NodeConfig",
    "Peer",
    "RemoteAE",
    "ReportingConfig",
    "ReportingPerson",
    "RetryPolicy",
    "Role",
    "SendRule",
    "SendTrigger",
    "SigningConfig",
    "StorageConfig",
    "TLSConfig",
    "TransfersConfig",
    "ae_title_problem",
    "load_config",
    "parse_config",
]
