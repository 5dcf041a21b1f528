// ERP.net's "Web Portal" application type: users sign in for their identity only, and the
// Domain API is called as the application (client credentials), so no user token ever
// reaches the API (external users never get API access).
//   /login            -> redirect to the ERP.net sign-in page (scope: openid profile)
//   /signin-callback  -> completes the sign-in; the user's identity is now known
//   /portal           -> the signed-in user's page, with data the application fetched
//
// ERP_INSTANCE=https://demodb.my.erp.net ERP_CLIENT_ID=my.portal ERP_SECRET=… \
// ERP_REDIRECT_URI=http://localhost:3000/signin-callback PORT=3000 node portal.mjs
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { init, ErpNetAuth } from "erpnet-auth";

const env = (name, fallback) => process.env[name] ?? fallback;
const settings = {
  instance: env("ERP_INSTANCE", "https://demodb.my.erp.net"),
  clientId: env("ERP_CLIENT_ID", "my.portal"),
  clientSecret: env("ERP_SECRET"),
};
const redirectUri = env("ERP_REDIRECT_URI", "http://localhost:3000/signin-callback");

await init();

// The application's own client: one per process (ERP.net's licence rules), its token in
// memory only. Every Domain API call goes through it.
const application = new ErpNetAuth({ ...settings, clientCredentials: true, scope: env("ERP_APP_SCOPE", "read") });

// One identity-only client per browser session: it signs the user in and is never used for
// an API call.
const visitors = new Map();
function visitor(sessionId) {
  let auth = visitors.get(sessionId);
  if (!auth) {
    auth = new ErpNetAuth({ ...settings, redirectUri, scope: "openid profile" });
    visitors.set(sessionId, auth);
  }
  return auth;
}

const server = createServer(async (req, res) => {
  let sid = /(?:^|;\s*)sid=([\w-]+)/.exec(req.headers.cookie ?? "")?.[1];
  if (!sid) {
    sid = randomUUID();
    res.setHeader("set-cookie", `sid=${sid}; HttpOnly; SameSite=Lax; Path=/`);
  }
  const user = visitor(sid);
  const url = new URL(req.url, redirectUri);
  try {
    if (url.pathname === "/login") {
      res.writeHead(302, { location: await user.signIn() }).end();
    } else if (url.pathname === new URL(redirectUri).pathname) {
      await user.handleCallback(new URL(url.search, redirectUri).href);
      res.writeHead(302, { location: "/portal" }).end();
    } else if (url.pathname === "/portal") {
      await user.ready();
      if (!user.isSignedIn) return res.writeHead(302, { location: "/login" }).end();
      // The data is the application's: fetched with its own token, chosen for this user.
      const response = await application.fetch("Crm_Sales_Customers?$top=10");
      const customers = await response.json();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ user: { sub: user.claims?.sub, name: user.claims?.name }, customers: customers.value }));
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end('<a href="/login">Sign in</a>');
    }
  } catch (error) {
    res.writeHead(502, { "content-type": "application/json" }).end(JSON.stringify({ code: error.code, message: error.message }));
  }
});

server.listen(Number(env("PORT", 3000)), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
