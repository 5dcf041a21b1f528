// Whoever can write the session store (a Redis writer) plants provider data in one user's
// snapshot. A process with a SharedProvider never writes metadata, sites or keys into its
// users' snapshots, so such members there are tampering: they must change nothing the
// process sends or verifies, for that user or, through the shared provider, for any other.
import { test } from "node:test";
import assert from "node:assert/strict";

import { init, ErpNetAuth, MemoryStorage, SharedProvider } from "../../pkg/node.js";
import { fakeServer, manualClock, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

await init();

const OPTIONS = { instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT };
const TOKEN_ENDPOINT = `${ROOT}/id/connect/token`;
const ODATA_ROOT = `${ROOT}/api/domain/odata/`;
// On the instance's own origin, as a stored document must be to be trusted at all.
const MOVED_TOKEN_ENDPOINT = `${ROOT}/api/domain/odata/Collect`;
const MOVED_ODATA_ROOT = `${ROOT}/evil/odata/`;

/** The fake provider with ERP.net's auto-discovery, and every request this process sent. */
function world() {
  const server = fakeServer({ ttl: 60 });
  const clock = manualClock();
  server.useClock(clock.now);
  const sites = {
    Host: "demodb.my.erp.net",
    WebSites: [{ Type: "DomainAPI", Status: "Working", Url: `${ROOT}/api`, AdditionalProperties: { ODataServiceRoot: ODATA_ROOT } }],
  };
  const fetch = (url, init) => (url === `${ROOT}/tools/auto-discovery` ? Promise.resolve(Response.json(sites)) : server.fetch(url, init));
  return { server, clock, fetch };
}

/** The provider's real signing key, as its key set serves it. */
async function realKey(server) {
  const response = await server.fetch(`${ROOT}/id/.well-known/openid-configuration/jwks`);
  return (await response.json()).keys[0];
}

/** A key of the attacker's under the provider's key id. */
async function attackerKey() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  return { kty, crv, x, y, kid: "fake-1", alg: "ES256", use: "sig" };
}

/** A process: one SharedProvider, a client per user session, the signature checks it made. */
function process_({ fetch, clock }, storage) {
  const provider = new SharedProvider(OPTIONS);
  const checkedKeys = [];
  const verifySignature = async (check) => {
    checkedKeys.push(check.key);
    const { verifySignature: platform } = await import("../../pkg/loop.js");
    return platform(check);
  };
  const client = (key) => new ErpNetAuth({ provider, storage, storageKey: key, fetch, now: clock.now, verifySignature });
  return { provider, client, checkedKeys };
}

/** Signs `key`'s user in through `client`. */
async function signIn(server, client) {
  const event = await client.handleCallback(server.authorize(await client.signIn()));
  assert.equal(event.type, "signedIn");
  return client;
}

/** What a standalone client stores of the provider (the form the attacker copies). */
async function providerDocuments({ server, fetch, clock }) {
  const storage = new MemoryStorage();
  const standalone = new ErpNetAuth({ ...OPTIONS, storage, storageKey: "standalone", fetch, now: clock.now });
  await signIn(server, standalone);
  await standalone.fetch("Crm_Sales_Customers");
  standalone.close();
  const { metadata, sites, jwks } = JSON.parse(storage.get("standalone"));
  assert.ok(metadata && sites && jwks, "a standalone snapshot holds the provider's documents");
  return { metadata, sites, jwks };
}

/** Writes `members` into the stored snapshot of `key`, as a Redis writer would. */
function plant(storage, key, members) {
  const snapshot = JSON.parse(storage.get(key));
  assert.equal(snapshot.metadata ?? snapshot.sites ?? snapshot.jwks, undefined, "the process never stored provider data");
  storage.set(key, JSON.stringify({ ...snapshot, ...members }));
}

const paths = (requests) => requests.map((r) => r.url);
const sentSecretTo = (requests) => requests.filter((r) => r.body.includes(`client_secret=${SECRET}`)).map((r) => r.url);

test("a planted token endpoint and sites: the victim's renewal and calls, and the next user's sign-in, go where discovery said", async () => {
  const w = world();
  const storage = new MemoryStorage();
  const documents = await providerDocuments(w);
  // The process that signed the victim in.
  const first = process_(w, storage);
  (await signIn(w.server, first.client("victim"))).close();
  plant(storage, "victim", {
    metadata: { ...documents.metadata, token_endpoint: MOVED_TOKEN_ENDPOINT },
    sites: { ...documents.sites, odata_root: MOVED_ODATA_ROOT },
  });

  // Two processes read the planted snapshot: the one that discovered already, and a fresh one.
  for (const [name, proc] of [["the same process", first], ["a fresh process", process_(w, storage)]]) {
    const before = w.server.stats.requests.length;
    const victim = proc.client("victim");
    await victim.ready();
    assert.equal(victim.isSignedIn, true, `${name}: the victim stays signed in`);
    // Past the token's expiry: the call needs a renewal first.
    w.clock.advance(61_000);
    assert.equal((await victim.fetch("Crm_Sales_Customers")).status, 200, name);
    // Another user of the process signs in after the victim's session was loaded.
    (await signIn(w.server, proc.client(`next-user-${name}`))).close();
    victim.close();
    const sent = w.server.stats.requests.slice(before);
    assert.deepEqual(sentSecretTo(sent).filter((url) => url !== TOKEN_ENDPOINT), [], `${name}: the client secret went only to the discovered token endpoint`);
    assert.ok(sentSecretTo(sent).length >= 2, `${name}: a refresh and a code exchange were sent`);
    assert.deepEqual(paths(sent).filter((url) => url.startsWith(MOVED_TOKEN_ENDPOINT) || url.startsWith(MOVED_ODATA_ROOT)), [], `${name}: nothing went to the planted addresses`);
    assert.ok(paths(sent).includes(`${ODATA_ROOT}Crm_Sales_Customers`), `${name}: the call went to the discovered OData root`);
  }
});

test("a planted key set: it verifies nothing, for the victim or for the next user of the process", async () => {
  const w = world();
  const storage = new MemoryStorage();
  const real = await realKey(w.server);
  const first = process_(w, storage);
  (await signIn(w.server, first.client("victim"))).close();
  plant(storage, "victim", { jwks: { keys: [await attackerKey()] } });

  // A fresh process (nothing known yet) loads the victim first: on the way it discovers,
  // fetches the sites, and the key set its renewal's ID token needs.
  const proc = process_(w, storage);
  const problems = [];
  const victim = proc.client("victim");
  victim.on("renewalFailed", (event) => problems.push(event.error.code));
  victim.on("signInRequired", (event) => problems.push(event.reason.code));
  await victim.ready();
  w.clock.advance(61_000);
  assert.equal((await victim.fetch("Crm_Sales_Customers")).status, 200);
  assert.deepEqual(problems, [], "the victim's renewal was checked with the provider's key");
  // Every later sign-in of the process is checked with the provider's key.
  for (let i = 0; i < 3; i++) (await signIn(w.server, proc.client(`user-${i}`))).close();
  victim.close();
  assert.ok(proc.checkedKeys.length >= 4, `signature checks ${proc.checkedKeys.length}`);
  for (const key of proc.checkedKeys) assert.deepEqual([key.x, key.y], [real.x, real.y], "every signature was checked with the provider's key");
});

test("a snapshot carrying provider data is reported as tampered (storageError), the user's own state kept", async () => {
  const w = world();
  const storage = new MemoryStorage();
  const documents = await providerDocuments(w);
  const proc = process_(w, storage);
  const victim = await signIn(w.server, proc.client("victim"));
  const reported = [];
  victim.on("storageError", (event) => reported.push(event.error.code));
  // A planted write that the running client hears of (another process's write, adopted).
  plant(storage, "victim", { metadata: { ...documents.metadata, token_endpoint: MOVED_TOKEN_ENDPOINT }, jwks: documents.jwks });
  const before = w.server.stats.requests.length;
  // Two renewals: the first reads the planted snapshot under the token lock, the second is
  // sent by a session that has read it.
  for (let i = 0; i < 2; i++) {
    w.clock.advance(61_000);
    assert.equal((await victim.fetch("Crm_Sales_Customers")).status, 200);
  }
  assert.deepEqual(sentSecretTo(w.server.stats.requests.slice(before)), [TOKEN_ENDPOINT, TOKEN_ENDPOINT]);
  victim.close();
  // And a client that loads it.
  const loaded = proc.client("victim");
  loaded.on("storageError", (event) => reported.push(event.error.code));
  await loaded.ready();
  assert.equal(loaded.isSignedIn, true);
  loaded.close();
  assert.ok(reported.length >= 1 && reported.every((code) => code === "snapshot_tampered"), reported.join());
});
