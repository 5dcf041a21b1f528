// The same app on oauth4webapi: discovery, PKCE, callback, code exchange with the ID token
// signature checked, a Bearer call, refresh on expiry or 401.
import * as oauth from "oauth4webapi";

const issuer = new URL("https://demodb.my.erp.net/id");
const client = { client_id: "my.spa" };
const clientAuth = oauth.None();
const redirectUri = `${location.origin}/`;
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer));
const saved = () => JSON.parse(sessionStorage.getItem("tokens") ?? "null");

async function refresh(tokens) {
  const response = await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token);
  const result = await oauth.processRefreshTokenResponse(as, client, response);
  const next = { ...result, expires_at: Date.now() + (result.expires_in ?? 3600) * 1000 };
  sessionStorage.setItem("tokens", JSON.stringify(next));
  return next;
}

async function callApi(path) {
  let tokens = saved();
  if (tokens.expires_at - 30_000 < Date.now()) tokens = await refresh(tokens);
  const url = new URL(path, "https://demodb.my.erp.net/api/domain/odata/");
  let response = await oauth.protectedResourceRequest(tokens.access_token, "GET", url);
  if (response.status === 401) response = await oauth.protectedResourceRequest((await refresh(tokens)).access_token, "GET", url);
  return response;
}

const current = new URL(location.href);
if (current.searchParams.has("code") || current.searchParams.has("error")) {
  const pending = JSON.parse(sessionStorage.getItem("pending"));
  const params = oauth.validateAuthResponse(as, client, current, pending.state);
  const response = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, redirectUri, pending.verifier);
  const result = await oauth.processAuthorizationCodeResponse(as, client, response, { expectedNonce: pending.nonce, requireIdToken: true });
  await oauth.validateApplicationLevelSignature(as, response);
  sessionStorage.setItem("tokens", JSON.stringify({ ...result, expires_at: Date.now() + (result.expires_in ?? 3600) * 1000 }));
  history.replaceState(null, "", location.pathname);
}
if (!saved()) {
  const verifier = oauth.generateRandomCodeVerifier();
  const pending = { verifier, state: oauth.generateRandomState(), nonce: oauth.generateRandomNonce() };
  sessionStorage.setItem("pending", JSON.stringify(pending));
  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: client.client_id, redirect_uri: redirectUri, response_type: "code", scope: "openid profile offline_access read",
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: "S256", state: pending.state, nonce: pending.nonce,
  });
  location.assign(url);
} else {
  console.log(await (await callApi("Crm_Sales_Customers?$top=10")).json());
}
