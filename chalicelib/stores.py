"""Every repository of one backend: over the table (production) or in memory (tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.deletion import (
    DynamoDBPartitionRepository,
    InMemoryPartitionRepository,
    OwnedRows,
    PartitionRepository,
)
from chalicelib.events import (
    DynamoDBSecurityEventRepository,
    InMemorySecurityEventRepository,
    SecurityEventRepository,
)
from chalicelib.items import (
    DEFAULT_STATUS_SHARDS,
    DynamoDBItemRepository,
    InMemoryItemRepository,
    ItemRepository,
)
from chalicelib.limits import DynamoDBLimitRepository, InMemoryLimitRepository, LimitRepository
from chalicelib.mfa import DynamoDBMfaRepository, InMemoryMfaRepository, MfaRepository
from chalicelib.realtime import (
    ConnectionRepository,
    DynamoDBConnectionRepository,
    DynamoDBTicketRepository,
    InMemoryConnectionRepository,
    InMemoryTicketRepository,
    TicketRepository,
)
from chalicelib.recovery import DynamoDBLinkRepository, InMemoryLinkRepository, LinkRepository
from chalicelib.sessions import (
    DynamoDBSessionRepository,
    InMemorySessionRepository,
    SessionRepository,
)
from chalicelib.uploads import (
    DynamoDBUploadRepository,
    InMemoryUploadRepository,
    UploadRepository,
)
from chalicelib.users import DynamoDBUserRepository, InMemoryUserRepository, UserRepository
from chalicelib.workers import DynamoDBMarkRepository, InMemoryMarkRepository, MarkRepository

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


@dataclass(frozen=True)
class Stores:
    """Each repository the services take; the in-memory ones behave like the table's."""

    backend: str
    users: UserRepository
    sessions: SessionRepository
    items: ItemRepository
    uploads: UploadRepository
    events: SecurityEventRepository
    limits: LimitRepository
    links: LinkRepository
    partitions: PartitionRepository
    mfa: MfaRepository
    tickets: TicketRepository
    connections: ConnectionRepository
    marks: MarkRepository

    @classmethod
    def dynamodb(cls, table: Table, *, status_shards: int = DEFAULT_STATUS_SHARDS) -> Stores:
        return cls(
            backend="dynamodb",
            users=DynamoDBUserRepository(table),
            sessions=DynamoDBSessionRepository(table),
            items=DynamoDBItemRepository(table, status_shards=status_shards),
            uploads=DynamoDBUploadRepository(table),
            events=DynamoDBSecurityEventRepository(table),
            limits=DynamoDBLimitRepository(table),
            links=DynamoDBLinkRepository(table),
            partitions=DynamoDBPartitionRepository(table),
            mfa=DynamoDBMfaRepository(table),
            tickets=DynamoDBTicketRepository(table),
            connections=DynamoDBConnectionRepository(table),
            marks=DynamoDBMarkRepository(table),
        )

    @classmethod
    def in_memory(cls) -> Stores:
        users = InMemoryUserRepository()
        sessions = InMemorySessionRepository(users)
        items = InMemoryItemRepository(users)
        uploads = InMemoryUploadRepository(users)
        events = InMemorySecurityEventRepository()
        limits = InMemoryLimitRepository()
        links = InMemoryLinkRepository()
        mfa = InMemoryMfaRepository(users)
        tickets = InMemoryTicketRepository()
        connections = InMemoryConnectionRepository(users)
        forgetting: list[OwnedRows] = [
            sessions,
            items,
            uploads,
            events,
            links,
            mfa,
            tickets,
            connections,
        ]
        return cls(
            backend="memory",
            users=users,
            sessions=sessions,
            items=items,
            uploads=uploads,
            events=events,
            limits=limits,
            links=links,
            partitions=InMemoryPartitionRepository(users, forgetting),
            mfa=mfa,
            tickets=tickets,
            connections=connections,
            marks=InMemoryMarkRepository(),
        )
