// GraphQL Yoga 5 on node:http, one process: the peer a user would pick instead of pcf-api.
//
//   BENCH_DATABASE_URL=sqlite:///abs/notes.db | postgresql://user@host:port/db \
//     BENCH_PORT=8002 node bench/yoga/server.mjs
//
// The notes schema subset the benchmark queries (the same types and fields as pcf-api), on the
// table pcf-api's migration creates, with the same SQL: a page ordered by (created_at, id) plus
// a count, and a lookup by id. better-sqlite3 for SQLite, a pg pool (pcf-api's default pool size)
// for PostgreSQL. Yoga's defaults otherwise (its parser and validation caches are on by default).
// No authentication or authorization: Yoga is measured as a bare GraphQL server.
import { createServer } from "node:http";
import { createSchema, createYoga } from "graphql-yoga";

const POOL_SIZE = 20;

const typeDefs = /* GraphQL */ `
  type Note {
    id: ID!
    title: String!
    content: String!
    author: String!
    createdAt: String!
    updatedAt: String!
  }
  type NoteEdge {
    node: Note!
    cursor: String!
  }
  type PageInfo {
    hasNextPage: Boolean!
    hasPreviousPage: Boolean!
    startCursor: String
    endCursor: String
  }
  type NotesConnection {
    edges: [NoteEdge!]!
    pageInfo: PageInfo!
    totalCount: Int!
  }
  type Query {
    notes(limit: Int! = 10): NotesConnection!
    note(id: ID!): Note
  }
`;

const COLUMNS = "id, title, content, author, created_at, updated_at";

function sqliteStore(path) {
  return import("better-sqlite3").then(({ default: Database }) => {
    const db = new Database(path, { readonly: true });
    const page = db.prepare(
      `SELECT ${COLUMNS} FROM notes ORDER BY created_at DESC, id DESC LIMIT ?`,
    );
    const count = db.prepare("SELECT count(*) AS n FROM notes").pluck();
    const byId = db.prepare(`SELECT ${COLUMNS} FROM notes WHERE id = ?`);
    return {
      page: async (limit) => page.all(limit),
      count: async () => count.get(),
      byId: async (id) => byId.get(id) ?? null,
    };
  });
}

function postgresStore(url) {
  return import("pg").then(({ default: pg }) => {
    const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE });
    const page = `SELECT ${COLUMNS} FROM notes ORDER BY created_at DESC, id DESC LIMIT $1`;
    const byId = `SELECT ${COLUMNS} FROM notes WHERE id = $1`;
    return {
      page: async (limit) =>
        (await pool.query({ name: "page", text: page, values: [limit] })).rows,
      count: async () =>
        Number((await pool.query({ name: "count", text: "SELECT count(*) AS n FROM notes" })).rows[0].n),
      byId: async (id) =>
        (await pool.query({ name: "by_id", text: byId, values: [id] })).rows[0] ?? null,
    };
  });
}

const timestamp = (value) => (value instanceof Date ? value.toISOString() : String(value));
const cursor = (row) =>
  Buffer.from(`${timestamp(row.created_at)}|${row.id}`).toString("base64url");

const note = (row) =>
  row && {
    id: row.id,
    title: row.title,
    content: row.content,
    author: row.author,
    createdAt: timestamp(row.created_at),
    updatedAt: timestamp(row.updated_at),
  };

async function main() {
  const url = process.env.BENCH_DATABASE_URL;
  const port = Number(process.env.BENCH_PORT ?? 8002);
  if (!url) throw new Error("BENCH_DATABASE_URL is required");
  const store = url.startsWith("sqlite:")
    ? await sqliteStore(url.replace(/^sqlite:\/\//, ""))
    : await postgresStore(url);

  const resolvers = {
    Query: {
      note: async (_, { id }) => note(await store.byId(id)),
      notes: async (_, { limit }) => {
        const [rows, total] = await Promise.all([store.page(limit), store.count()]);
        const edges = rows.map((row) => ({ node: note(row), cursor: cursor(row) }));
        return {
          edges,
          totalCount: total,
          pageInfo: {
            hasNextPage: rows.length < total,
            hasPreviousPage: false,
            startCursor: edges[0]?.cursor ?? null,
            endCursor: edges.at(-1)?.cursor ?? null,
          },
        };
      },
    },
  };

  const yoga = createYoga({ schema: createSchema({ typeDefs, resolvers }) });
  const server = createServer(yoga);
  server.keepAliveTimeout = 5000;
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  server.listen(port, "127.0.0.1");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
