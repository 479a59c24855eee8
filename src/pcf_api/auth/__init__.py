"""Identity (who is calling) and authorization (may they do this), kept apart from GraphQL.

``identity`` verifies bearer tokens; ``authorizer`` answers "may subject do action on resource"
through a cached decision layer over one of two backends with the same policy (``policy``):
``local`` (relationships in the application database) or ``spicedb`` (SpiceDB's HTTP API).
``factory`` builds them from settings.
"""
