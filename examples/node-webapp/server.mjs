// The seed's "web based external application": a confidential client on plain node:http.
//   /login            -> redirect to the ERP.net sign-in page
//   /signin-callback  -> completes the sign-in (code exchange), stores the tokens
//   /customers        -> calls the Domain API; the token renews by itself
//   /logout           -> revokes and redirects to the end-session URL
//
// ERP_INSTANCE=https://demodb.my.erp.net ERP_CLIENT_ID=my.trusted.app/first ERP_SECRET=… \
// ERP_REDIRECT_URI=http://localhost:3000/signin-callback PORT=3000 node server.mjs
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { init, ErpNetAuth, MemoryStorage } from "erpnet-auth";

const env = (name, fallback) => process.env[name] ?? fallback;
const settings = {
  instance: env("ERP_INSTANCE", "https://demodb.my.erp.net"),
  clientId: env("ERP_CLIENT_ID", "my.trusted.app/first"),
  clientSecret: env("ERP_SECRET"),
  redirectUri: env("ERP_REDIRECT_URI", "http://localhost:3000/signin-callback"),
  scope: env("ERP_SCOPE", undefined),
};

await init();

// One snapshot per browser session. Replace with your session store (Redis, a database…);
// with several processes, also pass a `lock` that works across them.
const storage = new MemoryStorage();
// One client per browser session, so that concurrent requests of one user share one
// in-flight renewal (two concurrent refreshes of a rotating refresh token revoke the grant).
const clients = new Map();
function authFor(sessionId) {
  let auth = clients.get(sessionId);
  if (!auth) {
    auth = new ErpNetAuth({ ...settings, storage, storageKey: `erp:${sessionId}` });
    auth.on("signInRequired", () => console.log(`session ${sessionId.slice(0, 8)}…: sign-in required`));
    clients.set(sessionId, auth);
  }
  return auth;
}

const server = createServer(async (req, res) => {
  let sid = /(?:^|;\s*)sid=([\w-]+)/.exec(req.headers.cookie ?? "")?.[1];
  if (!sid) {
    sid = randomUUID();
    res.setHeader("set-cookie", `sid=${sid}; HttpOnly; SameSite=Lax; Path=/`);
  }
  const auth = authFor(sid);
  const url = new URL(req.url, settings.redirectUri);
  try {
    if (url.pathname === "/login") {
      res.writeHead(302, { location: await auth.signIn() }).end();
    } else if (url.pathname === new URL(settings.redirectUri).pathname) {
      // The URL the browser came back to, as registered (this app may sit behind a proxy).
      await auth.handleCallback(new URL(url.search, settings.redirectUri).href);
      res.writeHead(302, { location: "/customers" }).end();
    } else if (url.pathname === "/customers") {
      const response = await auth.fetch("Crm_Sales_Customers?$top=10");
      res.writeHead(response.status, { "content-type": "application/json" });
      res.end(await response.text());
    } else if (url.pathname === "/logout") {
      const endSession = await auth.signOut();
      res.writeHead(302, { location: endSession ?? "/" }).end();
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end('<a href="/login">Sign in with ERP.net</a>');
    }
  } catch (error) {
    const status = ["not_signed_in", "sign_in_required"].includes(error.code) ? 401 : 502;
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ code: error.code, message: error.message }));
  }
});

server.listen(Number(env("PORT", 3000)), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
