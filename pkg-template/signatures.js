// @ts-check
// Signature checks with the platform's crypto: the core chose the key and checked its type,
// strength and the signature's length; only the math happens here.
//
// Where the runtime has node:crypto (Node 20.16+, Bun, Deno), its verify answers at once on
// this thread; WebCrypto's runs on a worker thread and its answer waits for the event loop:
// in Node an RS256 check costs ~20 µs that way against ~130 µs by WebCrypto (make
// bench-peers shows both). Browsers and workers use WebCrypto.

const ALGORITHMS = {
  RS256: { key: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } },
  PS256: { key: { name: "RSA-PSS", hash: "SHA-256" }, verify: { name: "RSA-PSS", saltLength: 32 } },
  ES256: { key: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } },
};

// Imported keys, per algorithm and key: a provider signs with one or two keys at a time.
const MAX_KEYS = 16;
const ASCII = new TextEncoder();

function keyId(algorithm, jwk) {
  return `${algorithm}:${jwk.kty}:${jwk.n ?? ""}:${jwk.e ?? ""}:${jwk.crv ?? ""}:${jwk.x ?? ""}:${jwk.y ?? ""}`;
}

function remember(cache, id, key) {
  if (cache.size >= MAX_KEYS) cache.delete(cache.keys().next().value);
  cache.set(id, key);
  return key;
}

const webKeys = new Map();

function importWebKey(algorithm, jwk) {
  const id = keyId(algorithm, jwk);
  const known = webKeys.get(id);
  if (known) return known;
  const key = globalThis.crypto.subtle.importKey("jwk", { ...jwk, ext: true }, ALGORITHMS[algorithm].key, false, ["verify"]);
  key.catch(() => webKeys.get(id) === key && webKeys.delete(id));
  return remember(webKeys, id, key);
}

/**
 * Answers a `verifySignature` output with WebCrypto: resolves to `true` only for a valid
 * signature, `false` when it is not valid or cannot be checked here.
 * @param {import("./erpnet_auth_wasm.js").SignatureCheck} check
 */
export async function verifyWithWebCrypto(check) {
  const algorithm = ALGORITHMS[check.algorithm];
  if (!algorithm || !globalThis.crypto?.subtle) return false;
  try {
    const key = await importWebKey(check.algorithm, check.key);
    return await globalThis.crypto.subtle.verify(algorithm.verify, key, /** @type {BufferSource} */ (check.signature), ASCII.encode(check.signingInput));
  } catch {
    return false;
  }
}

// `getBuiltinModule` loads node:crypto without an import a browser bundle would have to
// resolve; undefined where the runtime has no such module. Loaded at the first check, not
// at import: loading it costs Node ~3 ms of cold start.
let nodeCrypto = null;
function loadNodeCrypto() {
  if (nodeCrypto === null) {
    try {
      const module = globalThis.process?.getBuiltinModule?.("node:crypto");
      nodeCrypto = module?.verify && module.createPublicKey ? module : undefined;
    } catch {
      nodeCrypto = undefined;
    }
  }
  return nodeCrypto;
}
const nodeKeys = new Map();

/** node:crypto's verdict, or `undefined` when this runtime's node:crypto cannot give one. */
function verifyWithNodeCrypto(check) {
  const { createPublicKey, verify, constants } = loadNodeCrypto();
  let key;
  try {
    const id = keyId(check.algorithm, check.key);
    key = nodeKeys.get(id) ?? remember(nodeKeys, id, createPublicKey({ key: { ...check.key }, format: "jwk" }));
  } catch {
    return undefined;
  }
  // The key must be of the algorithm's type, as WebCrypto's import for it would insist.
  const rsa = key.asymmetricKeyType === "rsa";
  const p256 = key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1";
  const options =
    check.algorithm === "RS256" && rsa ? { key } :
    check.algorithm === "PS256" && rsa ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } :
    check.algorithm === "ES256" && p256 ? { key, dsaEncoding: "ieee-p1363" } : undefined;
  if (!options) return false;
  try {
    return verify("sha256", ASCII.encode(check.signingInput), options, check.signature) === true;
  } catch {
    // A runtime whose node:crypto lacks what this needs: WebCrypto gives the verdict.
    return undefined;
  }
}

/**
 * Answers a `verifySignature` output (hand the result to `handleSignature`): resolves to
 * `true` only for a valid signature, `false` when it is not valid or cannot be checked here.
 * node:crypto where the runtime has it, else WebCrypto.
 * @param {import("./erpnet_auth_wasm.js").SignatureCheck} check
 */
export async function verifySignature(check) {
  const verdict = loadNodeCrypto() ? verifyWithNodeCrypto(check) : undefined;
  return verdict ?? verifyWithWebCrypto(check);
}
