// A real OpenID Connect provider (oidc-provider, OpenID Certified) shaped like the ERP.net
// identity server, plus a Domain API that checks its tokens, on one loopback port.
//
//   node tests/idp/server.mjs [--access-ttl SECONDS]
//
// Prints one JSON line {"port": N, "issuer": "..."} when ready; stop it by PID.
// Paths: /id/.well-known/openid-configuration, /id/connect/{authorize,token,endsession,
// revocation,userinfo,introspect}, /id/.well-known/openid-configuration/jwks,
// /api/domain/odata/{Crm_Customers,Crm_Sales_Customers}, /spa/ (the browser test app),
// and /test/{stats,revoke-all,reject-next,hold-token} for the tests.
import { createHash, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import Provider, { errors } from "oidc-provider";

const arg = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : fallback;
};
const accessTtl = Number(arg("--access-ttl", process.env.ACCESS_TTL ?? 3600));
const spaRoot = arg("--spa-root", fileURLToPath(new URL("../../tests/js/.out/spa/", import.meta.url)));

export const CONFIDENTIAL = { id: "my.trusted.app/first", secret: "my-plain-app-secret" };
export const PUBLIC_CLIENT = "my.spa";

// oidc-provider's built-in store keeps about 1,000 entries; tests need all of them.
const stores = new Map();
class MapAdapter {
  constructor(model) {
    this.model = model;
    if (!stores.has(model)) stores.set(model, new Map());
    this.store = stores.get(model);
  }
  async upsert(id, payload, expiresIn) {
    this.store.set(id, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }
  async find(id) {
    const entry = this.store.get(id);
    if (!entry || entry.expiresAt < Date.now()) return undefined;
    return entry.payload;
  }
  async findByUserCode() {}
  async findByUid(uid) {
    for (const { payload } of this.store.values()) if (payload.uid === uid) return payload;
    return undefined;
  }
  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    this.store.delete(id);
  }
  async revokeByGrantId(grantId) {
    for (const [id, { payload }] of this.store) if (payload.grantId === grantId) this.store.delete(id);
  }
}

const stats = { tokenRequests: 0, codeExchanges: 0, refreshes: 0, refreshFailures: 0, grantsRevoked: 0, apiRequests: 0, apiUnauthorized: 0, apiForbidden: 0, apiTooMany: 0 };
// ERP.net's per-session request limit (SessionConcurrentRequests = 1): one request runs,
// five wait, the next is answered 429. Each request takes this long to run.
const apiServiceMs = Number(arg("--api-service-ms", 3));
const SESSION_QUEUE = 5;
const sessions = new Map(); // grant id -> { running, waiting: [resolve] }
async function inSession(grantId, run) {
  let session = sessions.get(grantId);
  if (!session) sessions.set(grantId, (session = { running: false, waiting: [] }));
  if (session.running) {
    if (session.waiting.length >= SESSION_QUEUE) return false;
    await new Promise((resolve) => session.waiting.push(resolve));
  }
  session.running = true;
  try {
    await new Promise((resolve) => setTimeout(resolve, apiServiceMs));
    await run();
  } finally {
    const next = session.waiting.shift();
    if (next) next();
    else session.running = false;
  }
  return true;
}
let rejectNext = 0;
let holdToken = null;

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const issuer = `${base}/id`;

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [
    {
      client_id: CONFIDENTIAL.id,
      client_secret: CONFIDENTIAL.secret,
      token_endpoint_auth_method: "client_secret_post",
      grant_types: ["authorization_code", "refresh_token", "client_credentials"],
      response_types: ["code", "code id_token"],
      redirect_uris: ["http://localhost/signin-callback"],
      post_logout_redirect_uris: ["http://localhost/signed-out"],
    },
    {
      client_id: PUBLIC_CLIENT,
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: [`${base}/spa/`, `${base}/spa/memory.html`],
      post_logout_redirect_uris: [`${base}/spa/`],
    },
  ],
  routes: {
    authorization: "/connect/authorize",
    token: "/connect/token",
    end_session: "/connect/endsession",
    revocation: "/connect/revocation",
    userinfo: "/connect/userinfo",
    introspection: "/connect/introspect",
    jwks: "/.well-known/openid-configuration/jwks",
  },
  responseTypes: ["code", "code id_token"],
  scopes: ["openid", "offline_access", "profile", "read", "update", "DomainApi"],
  claims: { openid: ["sub"], profile: ["name"] },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub, name: sub }) }),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    dPoP: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
  },
  // Every refresh rotates the refresh token; presenting a used one revokes the grant.
  rotateRefreshToken: true,
  // oidc-provider drops offline_access unless prompt=consent; ERP.net issues refresh tokens
  // to clients allowed the grant.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  pkce: { required: (_ctx, client) => client.clientAuthMethod === "none" },
  ttl: { AccessToken: accessTtl, IdToken: 300, AuthorizationCode: 60, RefreshToken: 30 * 24 * 3600, Grant: 30 * 24 * 3600, Session: 24 * 3600, Interaction: 3600 },
  cookies: { keys: ["test-only-cookie-key"] },
  clientBasedCORS: () => true,
  renderError: async (ctx, out) => {
    ctx.type = "application/json";
    ctx.body = out;
  },
});
provider.on("grant.success", (ctx) => {
  stats.tokenRequests++;
  if (ctx.oidc.params.grant_type === "refresh_token") stats.refreshes++;
  if (ctx.oidc.params.grant_type === "authorization_code") stats.codeExchanges++;
});
provider.on("grant.error", (ctx) => {
  stats.tokenRequests++;
  if (ctx.oidc.params?.grant_type === "refresh_token") {
    stats.refreshes++;
    stats.refreshFailures++;
  }
});
provider.on("grant.revoked", () => stats.grantsRevoked++);
const oidc = provider.callback();

const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { "content-type": "application/json", "access-control-allow-origin": "*", ...headers });
  res.end(JSON.stringify(body));
};

// Reference tokens (ERP.net Automation): issued in the UI, a static Bearer, revocable.
const referenceTokens = new Map(); // token -> { revoked }
async function domainApi(req, res, entitySet) {
  // Every $batch body as received (with its TransactionId), to check that a replay resends it.
  if (entitySet === "$batch") {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    (stats.batches ??= []).push({ sha256: createHash("sha256").update(body).digest("hex"), bytes: body.length, transactionId: req.headers.transactionid ?? null, contentType: req.headers["content-type"] ?? null });
  }
  if (req.method === "OPTIONS") {
    res.writeHead(204, { "access-control-allow-origin": "*", "access-control-allow-headers": "authorization, content-type", "access-control-allow-methods": "GET, POST" });
    return res.end();
  }
  stats.apiRequests++;
  const value = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
  if (value?.startsWith("enrt_")) {
    const reference = referenceTokens.get(value);
    if (!reference || reference.revoked) {
      stats.apiUnauthorized++;
      return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token"' });
    }
    stats.apiReferenceToken = (stats.apiReferenceToken ?? 0) + 1;
    const ran = await inSession(value, async () => json(res, 200, { value: [{ Number: "C-0001" }] }));
    if (!ran) {
      stats.apiTooMany++;
      return json(res, 429, { error: { message: "Too many concurrent requests for this session." } });
    }
    return;
  }
  // A user's token, or the application's own (client credentials, as a Web Portal calls).
  const userToken = value ? await provider.AccessToken.find(value) : undefined;
  const appToken = !userToken && value ? await provider.ClientCredentials.find(value) : undefined;
  if (userToken) stats.apiUserTokens = (stats.apiUserTokens ?? 0) + 1;
  if (appToken) stats.apiAppTokens = (stats.apiAppTokens ?? 0) + 1;
  const token = userToken ?? appToken;
  const valid = token && !token.isExpired && (appToken || (await provider.Grant.find(token.grantId)));
  if (!valid || rejectNext > 0) {
    if (valid) rejectNext--;
    stats.apiUnauthorized++;
    return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token"' });
  }
  if (!token.scopes.has("read") && !token.scopes.has("DomainApi")) {
    stats.apiForbidden++;
    return json(res, 403, { error: { message: "The access token lacks the read scope." } });
  }
  const ran = await inSession(token.grantId ?? `app:${token.clientId}`, async () =>
    json(res, 200, { "@odata.context": `${base}/api/domain/odata/$metadata#${entitySet}`, value: [{ Id: "9da64839-a8d0-491d-aebb-4d18fa42b014", Number: "C-0001", Name: "Demo Customer" }] }),
  );
  if (!ran) {
    stats.apiTooMany++;
    return json(res, 429, { error: { message: "Too many concurrent requests for this session." } });
  }
}

async function revokeAll() {
  const grants = [...(stores.get("Grant")?.keys() ?? [])];
  for (const grantId of grants) {
    for (const model of ["AccessToken", "RefreshToken", "AuthorizationCode"]) await new MapAdapter(model).revokeByGrantId(grantId);
    await new MapAdapter("Grant").destroy(grantId);
  }
  return grants.length;
}

const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

server.on("request", async (req, res) => {
  const url = new URL(req.url, base);
  try {
    if (url.pathname === "/id/connect/token" && holdToken) {
      // The next token request is held: before the provider sees it, or after it rotated
      // the refresh token (its answer then leaves late), for the lock-holder-killed tests.
      const { ms, when } = holdToken;
      holdToken = null;
      stats.tokenRequestsHeld = (stats.tokenRequestsHeld ?? 0) + 1;
      if (when === "before") {
        await new Promise((resolve) => setTimeout(resolve, ms));
        // The client went away while the request was held: it never reached the provider.
        if (res.destroyed || req.socket.destroyed) {
          stats.tokenRequestsLost = (stats.tokenRequestsLost ?? 0) + 1;
          return;
        }
      } else {
        const end = res.end.bind(res);
        res.end = (...args) => (setTimeout(() => end(...args), ms), res);
      }
    }
    if (url.pathname === "/id" || url.pathname.startsWith("/id/")) {
      if (url.pathname === "/id/.well-known/openid-configuration") stats.discoveryRequests = (stats.discoveryRequests ?? 0) + 1;
      if (url.pathname === "/id/.well-known/openid-configuration/jwks") stats.keysRequests = (stats.keysRequests ?? 0) + 1;
      req.originalUrl = req.url;
      req.url = req.url.slice(3) || "/";
      return oidc(req, res);
    }
    // ERP.net's auto-discovery: the instance's sites, on its own origin.
    if (url.pathname === "/tools/auto-discovery") {
      return json(res, 200, {
        Host: url.host,
        DbName: "testdb",
        WebSites: [
          { Type: "ID", Status: "Working", Url: `${base}/id` },
          { Type: "DomainAPI", Status: "Working", Url: `${base}/api`, AdditionalProperties: { ODataServiceRoot: `${base}/api/domain/odata/` } },
          { Type: "UserProfile", Status: "Working", Url: `${base}/profile` },
          { Type: "TableAPI", Status: "NotWorking", StatusDescription: "not in this test server", Url: `${base}/tables` },
        ],
      });
    }
    if (url.pathname === "/profile/me") {
      stats.profileRequests = (stats.profileRequests ?? 0) + 1;
      const value = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
      const token = value ? await provider.AccessToken.find(value) : undefined;
      if (!token || token.isExpired || !(await provider.Grant.find(token.grantId))) {
        return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token"' });
      }
      return json(res, 200, { id: `user-${token.accountId}`, login: token.accountId, name: token.accountId, email: `${token.accountId}@test.example`, isAdmin: false, isActive: true });
    }
    // A transaction's long poll (ERP.net's WaitForChanges, up to 2 minutes there): the
    // token must still be valid when the answer leaves, as a real server checks it again.
    if (url.pathname === "/api/domain/odata/WaitForChanges") {
      const value = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
      const valid = async () => {
        const token = value ? await provider.AccessToken.find(value) : undefined;
        return Boolean(token && !token.isExpired);
      };
      stats.longPolls = (stats.longPolls ?? 0) + 1;
      if (!(await valid())) return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token"' });
      await new Promise((resolve) => setTimeout(resolve, Number(url.searchParams.get("ms") ?? 1000)));
      if (!(await valid())) {
        stats.longPollsExpired = (stats.longPollsExpired ?? 0) + 1;
        return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token", error_description="expired during the request"' });
      }
      return json(res, 200, { changes: [] });
    }
    const api = /^\/api\/domain\/odata\/(Crm_Customers|Crm_Sales_Customers|\$batch)$/.exec(url.pathname);
    if (api) return await domainApi(req, res, api[1]);
    if (url.pathname === "/test/stats") return json(res, 200, stats);
    if (url.pathname === "/test/reference-token" && req.method === "POST") {
      const token = `enrt_${randomUUID().replaceAll("-", "")}`;
      referenceTokens.set(token, { revoked: false });
      return json(res, 200, { token });
    }
    if (url.pathname === "/test/revoke-reference-tokens" && req.method === "POST") {
      for (const reference of referenceTokens.values()) reference.revoked = true;
      return json(res, 200, { revoked: referenceTokens.size });
    }
    if (url.pathname === "/test/revoke-all" && req.method === "POST") return json(res, 200, { revoked: await revokeAll() });
    if (url.pathname === "/test/hold-token" && req.method === "POST") {
      holdToken = { ms: Number(url.searchParams.get("ms") ?? 5000), when: url.searchParams.get("when") === "before" ? "before" : "after" };
      return json(res, 200, holdToken);
    }
    if (url.pathname === "/test/reject-next" && req.method === "POST") {
      rejectNext++;
      return json(res, 200, { rejectNext });
    }
    if (url.pathname.startsWith("/spa/")) {
      const file = normalize(join(spaRoot, url.pathname.slice(5) || "index.html"));
      if (!file.startsWith(normalize(spaRoot))) return json(res, 404, {});
      const body = await readFile(file);
      res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
      return res.end(body);
    }
    json(res, 404, { error: "not found" });
  } catch (error) {
    if (error?.code === "ENOENT") return json(res, 404, {});
    json(res, 500, { message: String(error?.message ?? error) });
  }
});

console.log(JSON.stringify({ port: server.address().port, issuer, accessTtl }));
void errors;
