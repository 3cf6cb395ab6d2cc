"""The node registry: which cache nodes may report which accounts.

A YAML file (USAGE_ETL_NODE_REGISTRY; none configured = every node is managed):

    unregistered: warn          # or `quarantine`
    nodes:
      cache-eu-1: {mode: managed}                       # may report any account
      acme-onprem-1: {mode: self_hosted, account_id: acme}

Rows from a self-hosted node for another account are quarantined as `tenant_mismatch`. Rows
from a node missing from the registry are loaded and reported (`warn`) or quarantined as
`unregistered_node` (`quarantine`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["managed", "self_hosted"]
    account_id: str | None = None

    @model_validator(mode="after")
    def _self_hosted_needs_account(self) -> NodeEntry:
        if self.mode == "self_hosted" and not self.account_id:
            raise ValueError("a self_hosted node needs account_id")
        if self.mode == "managed" and self.account_id:
            raise ValueError("a managed node may report any account: drop account_id")
        return self


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unregistered: Literal["warn", "quarantine"] = "warn"
    nodes: dict[str, NodeEntry] = {}


@dataclass(frozen=True)
class NodeAuthorization:
    only_account: str | None = None  # self-hosted: the one account it may report
    reject_unregistered: bool = False

    @property
    def tag(self) -> str:
        """How this authorization judges rows, recorded with every loaded object: when it
        changes (a node registered, a self-hosted node's account corrected) the object is
        decided again on the next run, even with the same ETag. "" for "any account"."""
        if self.reject_unregistered:
            return "node=unregistered"
        if self.only_account is not None:
            return f"node=self_hosted:{self.only_account}"
        return ""


@dataclass
class NodeRegistry:
    spec: RegistryFile | None = None  # None: no registry, every node managed
    _unregistered_seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_file(cls, path: Path) -> NodeRegistry:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            return cls(RegistryFile.model_validate(raw))
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ValueError(f"node registry {path} is invalid: {exc}") from None

    def tenant_for_node(self, node_id: str) -> NodeAuthorization:
        if self.spec is None:
            return NodeAuthorization()
        entry = self.spec.nodes.get(node_id)
        if entry is None:
            with self._lock:
                self._unregistered_seen.add(node_id)
            return NodeAuthorization(reject_unregistered=self.spec.unregistered == "quarantine")
        return NodeAuthorization(only_account=entry.account_id)

    def unregistered_nodes_seen(self) -> set[str]:
        return set(self._unregistered_seen)
