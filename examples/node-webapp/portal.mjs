// ERP.net's "Web Portal" application type: users sign in for their identity only, and the
// Domain API is called as the application (client credentials), so no user token ever
// reaches the API (external users never get API access).
//   GET  /                -> sign-in link
//   GET  /login           -> redirect to the ERP.net sign-in page (scope: openid profile)
//   GET  /signin-callback -> completes the sign-in; the session id is rotated
//   GET  /portal          -> the signed-in user's page, with data the application fetched
//   POST /logout          -> forgets the session
//
// ERP_INSTANCE=https://demodb.my.erp.net ERP_CLIENT_ID=my.portal ERP_SECRET=… \
// ERP_REDIRECT_URI=http://localhost:3000/signin-callback PORT=3000 node portal.mjs
import express from "express";
import { init, ErpNetAuth } from "erpnet-auth";
import { ServerAuth, toWebRequest, sendWebResponse, errorResponse } from "erpnet-auth/server";

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

// The visitors: identity only, never used for an API call; the browser holds a cookie, never a token.
const visitors = new ServerAuth({ ...settings, redirectUri, scope: "openid profile", afterSignIn: "/portal" });

const app = express();
app.disable("x-powered-by");
const web = (req) => toWebRequest(req, new URL(redirectUri).origin);

app.get("/login", async (req, res) => sendWebResponse(res, await visitors.signIn(web(req))));
app.get(new URL(redirectUri).pathname, async (req, res) => sendWebResponse(res, await visitors.callback(web(req))));
app.post("/logout", async (req, res) => sendWebResponse(res, await visitors.signOut(web(req))));

app.get("/portal", async (req, res) => {
  const user = await visitors.user(web(req));
  if (!user) return res.redirect("/login");
  try {
    // The data is the application's: fetched with its own token, chosen for this user.
    const response = await application.fetch("Crm_Sales_Customers?$top=10");
    const customers = await response.json();
    res.json({ user: { sub: user.sub, name: user.name }, customers: customers.value });
  } catch (error) {
    sendWebResponse(res, errorResponse(error));
  }
});

app.get("/", (_req, res) => res.type("html").send('<a href="/login">Sign in</a>'));

// Every failure a route lets through: `{code, message}`, never Express's page with a stack.
app.use((error, _req, res, _next) => sendWebResponse(res, errorResponse(error)));

const server = app.listen(Number(env("PORT", 3000)), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
