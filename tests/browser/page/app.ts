// The browser client the test drives: Apollo Client as a web app would set it up against pcf-api.
//
//   index.html?api=http://127.0.0.1:PORT&token=JWT
//
// - queries and mutations: PersistedQueryLink (SHA-256 from crypto.subtle, hashed queries as GET)
//   in front of HttpLink, which sends the token as `Authorization: Bearer …`;
// - subscriptions: GraphQLWsLink over graphql-ws, the token ONLY in the connection_init payload
//   (a browser cannot set headers on a WebSocket upgrade);
// - InMemoryCache with relayStylePagination on Query.notes.
//
// Everything the test calls is on `window.pcf` and resolves to plain values: an error is a value
// ({ ok: false, error }), never a rejection, so the test can assert what a blocked call looks like.

import {
  ApolloClient,
  ApolloLink,
  CombinedGraphQLErrors,
  HttpLink,
  InMemoryCache,
  ServerError,
  gql,
} from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition, relayStylePagination } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";

const params = new URLSearchParams(window.location.search);
const api = (params.get("api") ?? "").replace(/\/$/, "");
const token = params.get("token") ?? "";
const wsUrl = `${api.replace(/^http/, "ws")}/graphql`;

// ---- what the page saw, for the test to read -------------------------------------------------

type RequestRecord = {
  method: string;
  operationName: string | null;
  variables: Record<string, unknown>;
  hasQuery: boolean; // the document text was sent
  persistedHash: string | null; // extensions.persistedQuery.sha256Hash
  status: number | null;
  errorCodes: string[];
  fetchError: string | null; // the fetch itself failed (CORS, network)
};

const requests: RequestRecord[] = [];
const wsLog: Array<Record<string, unknown>> = [];
const events: Array<Record<string, unknown>> = [];
const subscriptionErrors: Array<Record<string, unknown>> = [];

function errorValue(error: unknown): Record<string, unknown> {
  const value: Record<string, unknown> = {
    name: (error as Error)?.name ?? typeof error,
    message: String((error as Error)?.message ?? error),
  };
  if (CombinedGraphQLErrors.is(error)) {
    value.codes = error.errors.map((e) => e.extensions?.code ?? null);
  }
  if (ServerError.is(error)) {
    value.statusCode = error.statusCode;
    value.bodyText = error.bodyText;
  }
  if (error && typeof error === "object" && "code" in error) {
    value.code = (error as { code: unknown }).code; // a CloseEvent from graphql-ws
    value.reason = (error as { reason?: unknown }).reason ?? null;
  }
  return value;
}

function describeRequest(input: RequestInfo | URL, init?: RequestInit): RequestRecord {
  const method = (init?.method ?? "GET").toUpperCase();
  let body: Record<string, unknown> = {};
  if (typeof init?.body === "string") {
    body = JSON.parse(init.body);
  } else {
    const url = new URL(String(input instanceof Request ? input.url : input));
    for (const [key, raw] of url.searchParams) {
      body[key] = key === "extensions" || key === "variables" ? JSON.parse(raw) : raw;
    }
  }
  const extensions = (body.extensions ?? {}) as { persistedQuery?: { sha256Hash?: string } };
  return {
    method,
    operationName: (body.operationName as string | undefined) ?? null,
    variables: (body.variables as Record<string, unknown> | undefined) ?? {},
    hasQuery: typeof body.query === "string" && body.query.length > 0,
    persistedHash: extensions.persistedQuery?.sha256Hash ?? null,
    status: null,
    errorCodes: [],
    fetchError: null,
  };
}

// Every HTTP request the HttpLink makes goes through here, so the test can see what the
// persisted-queries link sent (hash only, or hash and document) and what came back.
async function recordingFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const record = describeRequest(input, init);
  requests.push(record);
  let response: Response;
  try {
    response = await fetch(input, init);
  } catch (error) {
    record.fetchError = String((error as Error)?.message ?? error);
    throw error;
  }
  record.status = response.status;
  try {
    const parsed = JSON.parse(await response.clone().text());
    record.errorCodes = (parsed.errors ?? []).map(
      (e: { extensions?: { code?: string } }) => e.extensions?.code ?? "",
    );
  } catch {
    // not JSON: leave the codes empty
  }
  return response;
}

// ---- the client ---------------------------------------------------------------------------------

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const httpLink = new HttpLink({
  uri: `${api}/graphql`,
  headers: { authorization: `Bearer ${token}` },
  fetch: recordingFetch,
});

const persistedLink = new PersistedQueryLink({ sha256, useGETForHashedQueries: true });

const wsClient = createClient({
  url: wsUrl,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
  shouldRetry: () => false,
  on: {
    connecting: () => wsLog.push({ event: "connecting" }),
    opened: () => wsLog.push({ event: "opened" }),
    connected: (_socket, payload) => wsLog.push({ event: "connected", payload: payload ?? null }),
    closed: (event) => {
      const close = event as CloseEvent;
      wsLog.push({ event: "closed", code: close?.code ?? null, reason: close?.reason ?? "" });
    },
    error: (error) => wsLog.push({ event: "error", error: errorValue(error) }),
  },
});

const wsLink = new GraphQLWsLink(wsClient);

const link = ApolloLink.split(
  ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  },
  wsLink,
  ApolloLink.from([persistedLink, httpLink]),
);

const client = new ApolloClient({
  link,
  cache: new InMemoryCache({
    typePolicies: { Query: { fields: { notes: relayStylePagination() } } },
  }),
});

// ---- operations ---------------------------------------------------------------------------------

const CREATE_NOTE = gql`
  mutation CreateNote($input: CreateNoteInput!) {
    createNote(input: $input) {
      id
      title
      author
    }
  }
`;

const NOTES_PAGE = gql`
  query NotesPage($first: Int!, $after: String) {
    notes(first: $first, after: $after) {
      edges {
        cursor
        node {
          id
          title
        }
      }
      pageInfo {
        hasNextPage
        hasPreviousPage
        startCursor
        endCursor
      }
    }
  }
`;

const NOTE_CREATED = gql`
  subscription NoteCreated {
    noteCreated {
      id
      title
      author
    }
  }
`;

type Page = {
  ok: boolean;
  ids?: string[];
  titles?: string[];
  pageInfo?: Record<string, unknown>;
  error?: Record<string, unknown>;
};

let pager: ReturnType<typeof client.watchQuery> | null = null;
let pagerSubscription: { unsubscribe(): void } | null = null;

function pageValue(data: any): Page {
  const connection = data?.notes;
  if (!connection) return { ok: false, error: { name: "NoData", message: JSON.stringify(data) } };
  return {
    ok: true,
    ids: connection.edges.map((edge: any) => edge.node.id),
    titles: connection.edges.map((edge: any) => edge.node.title),
    pageInfo: { ...connection.pageInfo },
  };
}

async function createNote(title: string, author: string): Promise<Record<string, unknown>> {
  try {
    const result = await client.mutate({
      mutation: CREATE_NOTE,
      variables: { input: { title, content: `written in the browser: ${title}`, author } },
    });
    return { ok: true, note: (result.data as any).createNote };
  } catch (error) {
    return { ok: false, error: errorValue(error) };
  }
}

// The first page, watched: later pages come through fetchMore and relayStylePagination merges
// them into this one query's result, as a list view with "load more" does.
async function firstPage(first: number): Promise<Page> {
  pagerSubscription?.unsubscribe();
  pager = client.watchQuery({ query: NOTES_PAGE, variables: { first } });
  const result = await new Promise<any>((resolve) => {
    pagerSubscription = pager!.subscribe({
      next: (value) => {
        if (!value.loading) resolve(value);
      },
      error: (error) => resolve({ error }),
    });
  });
  if (result.error) return { ok: false, error: errorValue(result.error) };
  return pageValue(result.data);
}

// What the list shows now: the watched query as the cache answers it, relayStylePagination's
// read function merging every page fetched so far. (Read from the cache rather than
// getCurrentResult(), which catches up only when the cache broadcasts, after fetchMore resolves.)
function currentList(): any {
  return client.readQuery({ query: NOTES_PAGE, variables: pager!.variables });
}

async function fetchMore(first: number): Promise<Page> {
  if (!pager) return { ok: false, error: { name: "NoPager", message: "call firstPage first" } };
  const after = currentList()?.notes?.pageInfo?.endCursor ?? null;
  try {
    await pager.fetchMore({ variables: { first, after } });
  } catch (error) {
    return { ok: false, error: errorValue(error) };
  }
  return pageValue(currentList());
}

let noteCreated: { unsubscribe(): void } | null = null;

function subscribeNoteCreated(): void {
  noteCreated?.unsubscribe();
  noteCreated = client.subscribe({ query: NOTE_CREATED }).subscribe({
    next: (result: any) => {
      if (result.error) subscriptionErrors.push(errorValue(result.error));
      if (result.data?.noteCreated) events.push({ ...result.data.noteCreated });
    },
    error: (error: unknown) => subscriptionErrors.push(errorValue(error)),
    complete: () => wsLog.push({ event: "complete" }),
  });
}

// A query document no one has sent before (its operation name carries `tag`), run twice from
// the network: the persisted-queries link's whole cycle, miss → register → hit, on one hash.
async function persistedCycle(tag: string): Promise<Record<string, unknown>> {
  const name = `Probe_${tag.replace(/[^A-Za-z0-9_]/g, "_")}`;
  const query = gql(`query ${name} { notes(first: 1) { pageInfo { hasNextPage } } }`);
  const results: Array<Record<string, unknown>> = [];
  for (let i = 0; i < 2; i++) {
    try {
      // no-cache: the probe must not write Query.notes, which the paged list owns.
      const result = await client.query({ query, fetchPolicy: "no-cache" });
      results.push({ ok: true, data: result.data });
    } catch (error) {
      results.push({ ok: false, error: errorValue(error) });
    }
  }
  return { operationName: name, results };
}

// A plain fetch from this page's origin, outside Apollo: what a CORS refusal looks like to code.
async function rawFetch(): Promise<Record<string, unknown>> {
  try {
    const response = await fetch(`${api}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: "{ __typename }" }),
    });
    return { ok: true, status: response.status, body: await response.text() };
  } catch (error) {
    return { ok: false, error: errorValue(error) };
  }
}

const pcf = {
  createNote,
  firstPage,
  fetchMore,
  subscribeNoteCreated,
  rawFetch,
  persistedCycle,
  stopSubscription: () => noteCreated?.unsubscribe(),
  events: () => events.slice(),
  subscriptionErrors: () => subscriptionErrors.slice(),
  wsLog: () => wsLog.slice(),
  requests: () => requests.map((r) => ({ ...r })),
  config: { api, wsUrl, hasToken: token.length > 0 },
};

(window as any).pcf = pcf;
document.getElementById("status")!.textContent = `ready: ${api}`;
