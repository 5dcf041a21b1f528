// An API answer handed on to the browser: a compressing upstream (IIS compresses) behind
// `auth.fetch`, real sockets on both sides, the browser's connection kept alive.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, Agent, get } from "node:http";
import { gzipSync } from "node:zlib";

import { init } from "../../pkg/node.js";
import { ServerAuth, browserResponse, forwardResponse, sendWebResponse } from "../../pkg/server.js";
import { fakeServer, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

await init();
const BODY = JSON.stringify({ value: Array.from({ length: 50 }, (_, i) => ({ Id: i, Name: `Customer ${i}`, Note: "x".repeat(40) })) });
const COMPRESSED = gzipSync(BODY);
const listen = async (server) => (await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve)), `http://127.0.0.1:${server.address().port}`);

// What ERP.net behind IIS may send besides the body: none of it describes the decoded body
// on the app's origin.
const UPSTREAM_HEADERS = {
  "content-type": "application/json; odata.metadata=minimal",
  "content-encoding": "gzip",
  "content-length": String(COMPRESSED.length),
  "set-cookie": ["ARRAffinity=abc; Path=/; HttpOnly", "ASP.NET_SessionId=def; Path=/"],
  "access-control-allow-origin": "*",
  "access-control-allow-credentials": "true",
  "www-authenticate": 'Basic realm="erp"',
  "strict-transport-security": "max-age=31536000",
  "alt-svc": 'h3=":443"',
  "clear-site-data": '"cookies"',
  "keep-alive": "timeout=5",
  "x-internal": "dropped because Connection names it",
  connection: "keep-alive, x-internal",
  etag: 'W/"42"',
  "odata-version": "4.0",
  "cache-control": "private",
};

let upstream;
let upstreamUrl;
before(async () => {
  upstream = createServer((req, res) => {
    res.writeHead(200, UPSTREAM_HEADERS);
    res.end(COMPRESSED);
  });
  upstreamUrl = await listen(upstream);
});
after(() => upstream.close());

/** The app: `handle(req, res)` per request; returns its URL and a closer. */
async function app(handle) {
  const server = createServer((req, res) => void handle(req, res));
  const url = await listen(server);
  return { url, close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(resolve))) };
}

/** Two GETs over one kept-alive connection, as a browser sends them: both must parse. */
async function twiceOnOneConnection(url) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const answers = [];
  try {
    for (let i = 0; i < 2; i++) {
      answers.push(
        await new Promise((resolve, reject) => {
          const request = get(url, { agent }, (response) => {
            const chunks = [];
            response.on("data", (c) => chunks.push(c));
            response.on("end", () => resolve({ reused: request.reusedSocket, status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks).toString() }));
            response.on("error", reject);
          });
          request.on("error", reject);
        }),
      );
    }
  } finally {
    agent.destroy();
  }
  return answers;
}

function checkHandedOn(answers) {
  assert.equal(answers[1].reused, true, "the second request went over the first's connection");
  for (const answer of answers) {
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.body), JSON.parse(BODY), "the body the browser reads is the decoded one, whole");
    assert.equal(answer.headers["content-type"], UPSTREAM_HEADERS["content-type"]);
    assert.equal(answer.headers.etag, UPSTREAM_HEADERS.etag);
    assert.equal(answer.headers["odata-version"], "4.0");
    assert.equal(answer.headers["cache-control"], "private");
    for (const name of ["content-encoding", "set-cookie", "access-control-allow-origin", "access-control-allow-credentials", "www-authenticate", "strict-transport-security", "alt-svc", "clear-site-data", "x-internal"]) {
      assert.equal(answer.headers[name], undefined, `${name} is not handed on`);
    }
    if (answer.headers["content-length"] !== undefined) assert.equal(Number(answer.headers["content-length"]), Buffer.byteLength(answer.body));
  }
}

test("forwardResponse: an API answer from a gzip upstream, through auth.fetch, over a kept-alive connection", async () => {
  const identity = fakeServer();
  // The fake identity server, and the Domain API on a real compressing server (fetch decodes).
  const fetch = (url, init) => (String(url).startsWith(`${ROOT}/api/`) ? globalThis.fetch(upstreamUrl, { headers: init.headers, signal: init.signal }) : identity.fetch(url, init));
  const auth = new ServerAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch });
  const started = await auth.signIn(new Request("http://localhost/login"));
  const back = new URL(identity.authorize(started.headers.get("location")));
  const done = await auth.callback(new Request(`http://localhost/signin-callback${back.search}`, { headers: { cookie: started.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ") } }));
  const cookie = done.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
  const server = await app(async (req, res) => forwardResponse(res, await auth.fetch(new Request("http://localhost/customers", { headers: { cookie } }), "Crm_Sales_Customers")));
  try {
    checkHandedOn(await twiceOnOneConnection(server.url));
  } finally {
    await server.close();
    auth.close();
  }
});

test("sendWebResponse with a fetched answer keeps the connection valid too", async () => {
  const server = await app(async (_req, res) => sendWebResponse(res, await fetch(upstreamUrl)));
  try {
    const answers = await twiceOnOneConnection(server.url);
    assert.equal(answers[1].reused, true);
    for (const answer of answers) {
      assert.deepEqual(JSON.parse(answer.body), JSON.parse(BODY));
      assert.equal(answer.headers["content-encoding"], undefined);
    }
  } finally {
    await server.close();
  }
});

test("browserResponse: the same filter as a web Response (Next.js, Hono, Workers)", async () => {
  const handed = browserResponse(await fetch(upstreamUrl));
  assert.ok(handed instanceof Response);
  assert.equal(handed.status, 200);
  assert.equal(handed.headers.get("content-encoding"), null);
  assert.equal(handed.headers.get("content-length"), null);
  assert.deepEqual(handed.headers.getSetCookie(), []);
  assert.equal(handed.headers.get("access-control-allow-origin"), null);
  assert.equal(handed.headers.get("etag"), UPSTREAM_HEADERS.etag);
  assert.deepEqual(await handed.json(), JSON.parse(BODY));
  // Served by node:http through the web Response (as a framework adapter would).
  const server = await app(async (_req, res) => forwardResponse(res, browserResponse(await fetch(upstreamUrl))));
  try {
    checkHandedOn(await twiceOnOneConnection(server.url));
  } finally {
    await server.close();
  }
});
