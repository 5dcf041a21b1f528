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
// coordinates their token renewals.
import express from "express";
import { init } from "erpnet-auth";
import { ServerAuth, toWebRequest, sendWebResponse } from "erpnet-auth/server";

const env = (name, fallback) => process.env[name] ?? fallback;
const redirectUri = env("ERP_REDIRECT_URI", "http://localhost:3000/signin-callback");

await init();

async function sharedStorage() {
  if (!process.env.REDIS_URL) return undefined; // sessions in this process's memory
  const { createClient } = await import("redis");
  const { RedisStorage } = await import("erpnet-auth/redis");
  const redis = createClient({ url: process.env.REDIS_URL, disableOfflineQueue: true });
  redis.on("error", (error) => console.error(`redis: ${error.message}`));
  await redis.connect();
  return new RedisStorage(redis);
}

const auth = new ServerAuth({
  instance: env("ERP_INSTANCE", "https://demodb.my.erp.net"),
  clientId: env("ERP_CLIENT_ID", "my.trusted.app/first"),
  clientSecret: env("ERP_SECRET"),
  redirectUri,
  scope: env("ERP_SCOPE", undefined),
  storage: await sharedStorage(),
  afterSignIn: "/customers",
});

const app = express();
app.disable("x-powered-by");
// The registered redirect URI's origin: what the browser sees, whatever proxy is in front.
const web = (req) => toWebRequest(req, new URL(redirectUri).origin);
const send = (res, response) => sendWebResponse(res, response);

app.get("/login", async (req, res) => send(res, await auth.signIn(web(req))));
app.get(new URL(redirectUri).pathname, async (req, res) => send(res, await auth.callback(web(req))));
app.post("/logout", async (req, res) => send(res, await auth.signOut(web(req))));

app.get("/customers", async (req, res) => {
  try {
    send(res, await auth.fetch(web(req), "Crm_Sales_Customers?$top=10"));
  } catch (error) {
    // error.code: "not_signed_in", "sign_in_required", "renewal_unavailable", …
    const status = ["not_signed_in", "sign_in_required"].includes(error.code) ? 401 : 502;
    res.status(status).json({ code: error.code, message: error.message });
  }
});

app.get("/", async (req, res) => {
  const user = await auth.user(web(req));
  res.type("html").send(
    user
      ? `Signed in as ${escapeHtml(user.name ?? user.sub)}. <a href="/customers">Customers</a> <form method="post" action="/logout"><button>Sign out</button></form>`
      : '<a href="/login">Sign in with ERP.net</a>',
  );
});

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const server = app.listen(Number(env("PORT", 3000)), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
