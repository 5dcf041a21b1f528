// The same app on openid-client (v6, browser build): discovery, PKCE, callback with the ID
// token signature checked (non-repudiation checks on), a Bearer call, refresh on expiry or 401.
import * as client from "openid-client";

const config = await client.discovery(new URL("https://demodb.my.erp.net/id"), "my.spa", undefined, client.None());
client.enableNonRepudiationChecks(config);
const redirectUri = `${location.origin}/`;
const saved = () => JSON.parse(sessionStorage.getItem("tokens") ?? "null");

async function refresh(tokens) {
  const result = await client.refreshTokenGrant(config, tokens.refresh_token);
  const next = { access_token: result.access_token, refresh_token: result.refresh_token ?? tokens.refresh_token, expires_at: Date.now() + (result.expiresIn() ?? 3600) * 1000 };
  sessionStorage.setItem("tokens", JSON.stringify(next));
  return next;
}

async function callApi(path) {
  let tokens = saved();
  if (tokens.expires_at - 30_000 < Date.now()) tokens = await refresh(tokens);
  const url = new URL(path, "https://demodb.my.erp.net/api/domain/odata/");
  let response = await client.fetchProtectedResource(config, tokens.access_token, url, "GET");
  if (response.status === 401) response = await client.fetchProtectedResource(config, (await refresh(tokens)).access_token, url, "GET");
  return response;
}

if (new URLSearchParams(location.search).has("code")) {
  const pending = JSON.parse(sessionStorage.getItem("pending"));
  const result = await client.authorizationCodeGrant(config, new URL(location.href), {
    pkceCodeVerifier: pending.verifier, expectedState: pending.state, expectedNonce: pending.nonce, idTokenExpected: true,
  });
  sessionStorage.setItem("tokens", JSON.stringify({ access_token: result.access_token, refresh_token: result.refresh_token, expires_at: Date.now() + (result.expiresIn() ?? 3600) * 1000 }));
  history.replaceState(null, "", location.pathname);
}
if (!saved()) {
  const verifier = client.randomPKCECodeVerifier();
  const pending = { verifier, state: client.randomState(), nonce: client.randomNonce() };
  sessionStorage.setItem("pending", JSON.stringify(pending));
  location.assign(client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri, scope: "openid profile offline_access read", code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256", state: pending.state, nonce: pending.nonce,
  }));
} else {
  console.log(await (await callApi("Crm_Sales_Customers?$top=10")).json());
}
