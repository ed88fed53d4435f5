"""The run context: what one `bestiary build` is doing, decided once and passed to every stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bestiary.connectors.http import HttpPolicy, policy_from
from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig

Mode = Literal["full", "incremental", "rebuild"]


@dataclass(frozen=True)
class RunContext:
    """`run` is 1 for a full build and counts incremental runs after it; `partitions` are every run's crawl
    partitions (earlier runs' are replayed from their kept pages); `first_shard` is the first free shard
    index per split (an incremental run appends)."""
    cfg: BuildConfig
    run: int = 1
    mode: Mode = "full"
    partitions: tuple[dict, ...] = ()
    first_shard: dict[str, int] = field(default_factory=dict)

    @property
    def out(self) -> str:
        return self.cfg.out

    def path(self, *parts: str) -> str:
        return io.join(self.cfg.out, *parts)

    @property
    def policy(self) -> HttpPolicy:
        return policy_from(self.cfg.http, self.cfg.sources)

    @property
    def incremental(self) -> bool:
        return self.run > 1
