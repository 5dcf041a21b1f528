// Speed in Node, the same scenarios on each library that runs there, against one instant
// in-memory provider (so only the client's own cost is measured):
//  - code response: the callback with a code → token request → RS256 ID token, signature
//    checked → tokens (erpnet-auth: WebCrypto through the core's verifySignature output;
//    oauth4webapi: validateApplicationLevelSignature; openid-client: non-repudiation checks);
//  - one authorized call over plain fetch, sequential and 200 at once;
//  - cold start: import → ready, in fresh processes.
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, sign, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import * as oauth from "oauth4webapi";
import * as oidc from "openid-client";
import { init, ErpNetAuth } from "../../pkg/node.js";
import { verifyWithWebCrypto } from "../../pkg/loop.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const ISSUER = "https://demodb.my.erp.net/id";
const API = "https://demodb.my.erp.net/api/domain/odata/";
const CLIENT = "my.spa";
const REDIRECT = "http://localhost/signin-callback";

// ----- the provider -----
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" };
const b64 = (data) => Buffer.from(data).toString("base64url");
function idToken(nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: ISSUER, sub: "admin", aud: CLIENT, iat: now, exp: now + 300, nonce };
  const input = `${b64(JSON.stringify({ alg: "RS256", kid: "k1", typ: "JWT" }))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${b64(sign("sha256", Buffer.from(input), privateKey))}`;
}
const json = (body) => new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
const discovery = {
  issuer: ISSUER,
  authorization_endpoint: `${ISSUER}/connect/authorize`,
  token_endpoint: `${ISSUER}/connect/token`,
  revocation_endpoint: `${ISSUER}/connect/revocation`,
  jwks_uri: `${ISSUER}/.well-known/openid-configuration/jwks`,
  id_token_signing_alg_values_supported: ["RS256"],
  code_challenge_methods_supported: ["S256"],
};
let tokenBody = null; // the next token answer, prepared outside the timed part
async function provider(input, init = {}) {
  const url = String(input instanceof Request ? input.url : input);
  if (url.startsWith(API)) return new Response('{"value":[]}', { status: 200, headers: { "content-type": "application/json" } });
  if (url.endsWith("/.well-known/openid-configuration")) return json(discovery);
  if (url.endsWith("/jwks")) return json({ keys: [jwk] });
  if (url.endsWith("/connect/token")) return json(tokenBody);
  if (url.endsWith("/connect/revocation")) return new Response("", { status: 200 });
  return new Response("not found", { status: 404 });
}
const tokens = (nonce) => ({ access_token: `at-${randomUUID()}`, token_type: "Bearer", expires_in: 3600, refresh_token: `rt-${randomUUID()}`, id_token: idToken(nonce) });

// ----- the clients -----
await init();
const ours = new ErpNetAuth({ issuer: ISSUER, clientId: CLIENT, redirectUri: REDIRECT, scope: "openid offline_access", apiRoot: API, fetch: provider });
// The same client with the signature math by WebCrypto, as the peers do it (the package's
// default in Node is node:crypto's verify): shown beside the table.
const oursWebCrypto = new ErpNetAuth({ issuer: ISSUER, clientId: CLIENT, redirectUri: REDIRECT, scope: "openid offline_access", apiRoot: API, fetch: provider, verifySignature: verifyWithWebCrypto });
const as = await oauth.processDiscoveryResponse(new URL(ISSUER), await provider(`${ISSUER}/.well-known/openid-configuration`));
const o4w = { client: { client_id: CLIENT }, auth: oauth.None(), opts: { [oauth.customFetch]: provider } };
const config = await oidc.discovery(new URL(ISSUER), CLIENT, undefined, oidc.None(), { [oidc.customFetch]: provider });
config[oidc.customFetch] = provider;
oidc.enableNonRepudiationChecks(config);

// One code response, timed from the callback to the tokens. Returns µs.
async function oursCodeResponse(client) {
  if (client.isSignedIn) await client.signOut();
  const url = new URL(await client.signIn());
  tokenBody = tokens(url.searchParams.get("nonce"));
  const callback = `${REDIRECT}?code=c1&state=${url.searchParams.get("state")}`;
  const start = performance.now();
  await client.handleCallback(callback);
  return (performance.now() - start) * 1000;
}
const codeResponse = {
  "erpnet-auth": () => oursCodeResponse(ours),
  "erpnet-auth/webcrypto": () => oursCodeResponse(oursWebCrypto),
  async oauth4webapi() {
    const state = oauth.generateRandomState(), nonce = oauth.generateRandomNonce(), verifier = oauth.generateRandomCodeVerifier();
    tokenBody = tokens(nonce);
    const callback = new URL(`${REDIRECT}?code=c1&state=${state}`);
    const start = performance.now();
    const params = oauth.validateAuthResponse(as, o4w.client, callback, state);
    const response = await oauth.authorizationCodeGrantRequest(as, o4w.client, o4w.auth, params, REDIRECT, verifier, o4w.opts);
    await oauth.processAuthorizationCodeResponse(as, o4w.client, response, { expectedNonce: nonce, requireIdToken: true });
    await oauth.validateApplicationLevelSignature(as, response, o4w.opts);
    return (performance.now() - start) * 1000;
  },
  async "openid-client"() {
    const state = oidc.randomState(), nonce = oidc.randomNonce(), verifier = oidc.randomPKCECodeVerifier();
    tokenBody = tokens(nonce);
    const callback = new URL(`${REDIRECT}?code=c1&state=${state}`);
    const start = performance.now();
    await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
    return (performance.now() - start) * 1000;
  },
};

const bearer = `at-${randomUUID()}`;
const callUrl = `${API}Crm_Sales_Customers?$top=10`;
const call = {
  fetch: () => provider(callUrl, { headers: { authorization: `Bearer ${bearer}` } }),
  "erpnet-auth": () => ours.fetch("Crm_Sales_Customers?$top=10"),
  oauth4webapi: () => oauth.protectedResourceRequest(bearer, "GET", new URL(callUrl), undefined, undefined, o4w.opts),
  "openid-client": () => oidc.fetchProtectedResource(config, bearer, new URL(callUrl), "GET"),
};
async function sequential(fn, n) {
  const start = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return ((performance.now() - start) * 1000) / n;
}
async function concurrent(fn, n, width) {
  const start = performance.now();
  for (let i = 0; i < n; i += width) await Promise.all(Array.from({ length: width }, fn));
  return ((performance.now() - start) * 1000) / n;
}

// Cold start, a fresh process each: the time from before the import to a usable client.
const coldScripts = {
  "erpnet-auth": `const t = performance.now(); const m = await import("${root}pkg/node.js"); await m.init(); new m.ErpNetAuth({ issuer: "${ISSUER}", clientId: "c", redirectUri: "${REDIRECT}" }); console.log(performance.now() - t);`,
  oauth4webapi: `const t = performance.now(); await import("oauth4webapi"); console.log(performance.now() - t);`,
  "openid-client": `const t = performance.now(); await import("openid-client"); console.log(performance.now() - t);`,
  "oidc-client-ts": `const t = performance.now(); await import("oidc-client-ts"); console.log(performance.now() - t);`,
};
function coldStart(name) {
  try {
    return Number(execFileSync(process.execPath, ["--input-type=module", "-e", coldScripts[name]], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()) * 1000;
  } catch {
    return NaN;
  }
}

export async function nodeFigures(rounds = 5) {
  const samples = {};
  const add = (key, value) => (samples[key] ??= []).push(value);
  for (const fn of Object.values(codeResponse)) for (let i = 0; i < 50; i++) await fn(); // warm-up
  for (let round = 0; round < rounds; round++) {
    // Interleaved: every library in every round.
    for (const [name, fn] of Object.entries(codeResponse)) {
      const runs = [];
      for (let i = 0; i < 200; i++) runs.push(await fn());
      runs.sort((a, b) => a - b);
      add(`code:${name}`, runs[runs.length >> 1]);
    }
    for (const [name, fn] of Object.entries(call)) {
      add(`seq:${name}`, await sequential(fn, 3000));
      add(`conc:${name}`, await concurrent(fn, 10000, 200));
    }
    for (const name of Object.keys(coldScripts)) add(`cold:${name}`, coldStart(name));
  }
  const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];
  return Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, median(values)]));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await nodeFigures(Number(process.argv[2] ?? 3)));
  ours.close();
  oursWebCrypto.close();
}
