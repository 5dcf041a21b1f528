// What checking one RS256 ID token costs with the npm package under Node: a hybrid callback
// (its front-channel token checked, the signature by the platform through the session's
// verifySignature output: node:crypto, the package's default in Node, and WebCrypto) minus a
// code-flow callback (no ID token there).
import { generateKeyPairSync, sign, createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { init } from "../../pkg/node.js";
import { Session, verifySignature, verifyWithWebCrypto } from "../../pkg/loop.js";

await init();
const ROOT = "https://demodb.my.erp.net";
const T0 = 1_700_000_000_000;
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid: "k1" }] });
const b64 = (data) => Buffer.from(data).toString("base64url");
const half = (value) => b64(createHash("sha256").update(value).digest().subarray(0, 16));

function drain(session) {
  const requests = [];
  const checks = [];
  for (;;) {
    const out = session.poll();
    if (out.type === "http") requests.push(out.request);
    if (out.type === "verifySignature") checks.push(out.check);
    if (out.type === "idle" || out.type === "waitUntil") return { requests, checks };
  }
}

/** Drains, answering signature checks as the driver does, until only requests are left. */
async function settle(session, verify = verifySignature) {
  const requests = [];
  for (;;) {
    const out = drain(session);
    requests.push(...out.requests);
    if (out.checks.length === 0) return requests;
    for (const check of out.checks) session.handleSignature(T0, check.id, await verify(check));
  }
}

// The hybrid callback (its front-channel RS256 ID token checked) against the code flow's
// callback (no ID token there) as the baseline.
async function run(hybrid, rounds, verify) {
  const session = new Session(
    { instance: ROOT, clientId: "my.trusted.app/first", clientSecret: "s", redirectUri: "http://localhost/signin-callback", responseType: hybrid ? "code id_token" : "code", discovery: false },
    undefined,
  );
  let spent = 0;
  for (let i = 0; i < rounds; i++) {
    const url = new URL(session.signIn(T0));
    for (const r of await settle(session)) {
      session.handleResponse(T0, r.id, 200, [], jwks);
      await settle(session);
    }
    const claims = { iss: `${ROOT}/id`, sub: "admin", aud: "my.trusted.app/first", exp: T0 / 1000 + 300, iat: T0 / 1000, nonce: url.searchParams.get("nonce"), c_hash: half("c1") };
    const input = `${b64(JSON.stringify({ alg: "RS256", kid: "k1" }))}.${b64(JSON.stringify(claims))}`;
    const token = `${input}.${b64(sign("sha256", Buffer.from(input), privateKey))}`;
    const state = url.searchParams.get("state");
    const callback = hybrid
      ? `http://localhost/signin-callback#code=c1&id_token=${token}&state=${state}`
      : `http://localhost/signin-callback?code=c1&state=${state}`;
    const start = performance.now();
    session.handleCallbackUrl(T0, callback);
    const requests = await settle(session, verify);
    spent += performance.now() - start;
    if (requests.length !== 1) throw new Error(`expected the code exchange, got ${requests.length} requests`);
    for (const r of requests) {
      session.handleResponse(T0, r.id, 400, [], '{"error":"invalid_grant"}');
      await settle(session);
    }
  }
  return spent / rounds;
}

const rounds = 1000;
for (const [name, verify] of [["node:crypto (the default in Node)", verifySignature], ["WebCrypto", verifyWithWebCrypto]]) {
  await run(true, 100, verify);
  const withCheck = await run(true, rounds, verify);
  const without = await run(false, rounds, verify);
  console.log(
    `RS256 ID token check, wasm + ${name}, Node ${process.version} (hybrid callback minus code-flow callback, ${rounds} rounds): ${((withCheck - without) * 1000).toFixed(1)} µs (hybrid ${(withCheck * 1000).toFixed(1)} µs, code flow ${(without * 1000).toFixed(1)} µs)`,
  );
}
