"""What every resolver receives: the caller, the store, the broker, a per-request loader, the
trace id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from pcf_api.auth.authorizer import Authorizer
from pcf_api.auth.identity import Identity
from pcf_api.config import Settings
from pcf_api.health import HealthRegistry
from pcf_api.observability.tracing import Tracing
from pcf_api.ratelimit import RateLimiter
from pcf_api.store.events import EventBroker
from pcf_api.store.models import Note
from pcf_api.store.resilient import ResilientNoteStore

if TYPE_CHECKING:  # the feed reads GraphQL contexts' authorization helpers: no import cycle
    from pcf_api.graphql.feed import ReadFeed


@dataclass
class Services:
    """The long-lived collaborators resolvers use, built by the composition root."""

    settings: Settings
    store: ResilientNoteStore
    broker: EventBroker
    feed: ReadFeed
    """The broker's events screened per caller: what subscription resolvers read."""
    health: HealthRegistry
    subscriptions: SubscriptionCounter
    authorizer: Authorizer
    rate_limiter: RateLimiter
    tracing: Tracing | None = None


@dataclass
class SubscriptionCounter:
    """Active subscriptions, per instance and per client, to enforce both limits."""

    per_client: dict[str, int] = field(default_factory=dict)
    total: int = 0


@dataclass
class GraphQLContext:
    services: Services
    identity: Identity | None
    trace_id: str
    client_id: str
    note_loader: DataLoader[str, Note | None]
    response_extensions: dict[str, Any] = field(default_factory=dict)
    read_loader: DataLoader[str, bool] | None = None
    """Batches read decisions on notes by id (made on first use, see graphql.authz)."""

    @property
    def store(self) -> ResilientNoteStore:
        return self.services.store


def make_context(
    services: Services, *, identity: Identity | None, trace_id: str, client_id: str
) -> GraphQLContext:
    store = services.store
    extensions: dict[str, Any] = {}

    async def load_notes(ids: list[str]) -> list[Note | None]:
        found, from_cache = await store.get_many(ids)
        if from_cache:
            # The database is down: these are the last versions this instance read.
            extensions["servedFromCache"] = True
        return [found.get(note_id) for note_id in ids]

    return GraphQLContext(
        services=services,
        identity=identity,
        trace_id=trace_id,
        client_id=client_id,
        note_loader=DataLoader(load_fn=load_notes, cache=True),
        response_extensions=extensions,
    )
