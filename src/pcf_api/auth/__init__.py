"""Identity (who is calling) and authorization (may they do this), kept apart from GraphQL.

``keys`` finds public signing keys, ``tokens`` verifies bearer tokens and resolves the caller
(``identity`` re-exports both); ``authorizer`` answers "may subject do action on resource"
through a cached decision layer over one of two backends with the same policy (``policy``):
``local`` (relationships in the application database) or ``spicedb`` (SpiceDB's HTTP API).
Nothing here logs through the observability package: auth sits below it (structlog directly).
"""
