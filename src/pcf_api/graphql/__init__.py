"""The GraphQL API: schema, resolvers, transport over HTTP and WebSocket, query limits."""
