// The seed's "web based external application": a confidential client on Express, built on
// erpnet-auth's server entry. The browser holds one HttpOnly session cookie, never a token.
//   GET  /                -> sign-in link, or who is signed in
//   GET  /login           -> redirect to the ERP.net sign-in page (a fresh session id)
//   GET  /signin-callback -> completes the sign-in; the session id is rotated
//   GET  /customers       -> calls the Domain API as the user; the token renews by itself
//   POST /logout          -> revokes, forgets the session, ends the provider session
//
// ERP_INSTANCE=https://demodb.my.erp.net ERP_CLIENT_ID=my.trusted.app/first ERP_SECRET=… \
// ERP_REDIRECT_URI=http://localhost:3000/signin-callback PORT=3000 node server.mjs
// Several processes (cluster, containers): REDIS_URL=redis://… shares the sessions and
// coordinates their token renewals, and ERP_COOKIE_KEY (the same in each, 32 random bytes:
// `openssl rand -base64 32`) seals the sign-in cookie so that any of them can complete it.
import express from "express";
import { init } from "erpnet-auth";
import { ServerAuth, toWebRequest, sendWebResponse, forwardResponse, errorResponse } from "erpnet-auth/server";

const env = (name, fallback) => process.env[name] ?? fallback;
const redirectUri = env("ERP_REDIRECT_URI", "http://localhost:3000/signin-callback");

await init();

async function sharedStorage() {
  if (!process.env.REDIS_URL) return undefined; // sessions in this process's memory
  const { createClient } = await import("redis");
  const { RedisStorage } = await import("erpnet-auth/redis");
  // Commands fail at once while the connection is down, and the queue of commands waiting
  // for a Redis that does not answer is bounded; RedisStorage gives each one 2 s.
  const redis = createClient({ url: process.env.REDIS_URL, disableOfflineQueue: true, commandsQueueMaxLength: 1_000 });
  redis.on("error", (error) => console.error(`redis: ${error.message}`));
  await redis.connect();
  return new RedisStorage(redis, { commandTimeoutMs: 2_000 });
}

// Every option is checked here: an unset ERP_SECRET stops the process now, not at the first
// callback.
const auth = new ServerAuth({
  instance: env("ERP_INSTANCE", "https://demodb.my.erp.net"),
  clientId: env("ERP_CLIENT_ID", "my.trusted.app/first"),
  clientSecret: env("ERP_SECRET"),
  redirectUri,
  scope: env("ERP_SCOPE", undefined),
  storage: await sharedStorage(),
  cookieKey: env("ERP_COOKIE_KEY", undefined),
  afterSignIn: "/customers",
  // Structured records (sign-in, renewal, 401, 429, failures), never a secret: one JSON line each.
  logger: (record) => record.level !== "debug" && console.error(JSON.stringify(record)),
});

const app = express();
app.disable("x-powered-by");
// The registered redirect URI's origin: what the browser sees, whatever proxy is in front.
const web = (req) => toWebRequest(req, new URL(redirectUri).origin);

app.get("/login", async (req, res) => sendWebResponse(res, await auth.signIn(web(req))));
app.get(new URL(redirectUri).pathname, async (req, res) => sendWebResponse(res, await auth.callback(web(req))));
app.post("/logout", async (req, res) => sendWebResponse(res, await auth.signOut(web(req))));

// As the user; the token renews by itself. The API's answer is handed on with only the
// headers that still describe its (decoded) body.
app.get("/customers", async (req, res) => forwardResponse(res, await auth.fetch(web(req), "Crm_Sales_Customers?$top=10")));

app.get("/", async (req, res) => {
  const user = await auth.user(web(req));
  res.type("html").send(
    user
      ? `Signed in as ${escapeHtml(user.name ?? user.sub)}. <a href="/customers">Customers</a> <form method="post" action="/logout"><button>Sign out</button></form>`
      : '<a href="/login">Sign in with ERP.net</a>',
  );
});

// Every failure a route lets through (not signed in, a store or provider that is down, …):
// `{code, message}` with its status (401, 502, 503, …), never Express's page with a stack.
app.use((error, _req, res, _next) => sendWebResponse(res, errorResponse(error)));

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const server = app.listen(Number(env("PORT", 3000)), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
