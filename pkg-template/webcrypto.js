// Signature checks with the platform's WebCrypto: the core chose the key and checked its
// type, strength and the signature's length; only the math happens here.

const ALGORITHMS = {
  RS256: { key: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } },
  PS256: { key: { name: "RSA-PSS", hash: "SHA-256" }, verify: { name: "RSA-PSS", saltLength: 32 } },
  ES256: { key: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } },
};

// Imported keys, per algorithm and key: a provider signs with one or two keys at a time.
const imported = new Map();
const MAX_KEYS = 16;
const ASCII = new TextEncoder();

function importKey(algorithm, jwk) {
  const id = `${algorithm}:${jwk.kty}:${jwk.n ?? ""}:${jwk.e ?? ""}:${jwk.crv ?? ""}:${jwk.x ?? ""}:${jwk.y ?? ""}`;
  let key = imported.get(id);
  if (!key) {
    key = globalThis.crypto.subtle.importKey("jwk", { ...jwk, ext: true }, ALGORITHMS[algorithm].key, false, ["verify"]);
    key.catch(() => imported.delete(id));
    if (imported.size >= MAX_KEYS) imported.delete(imported.keys().next().value);
    imported.set(id, key);
  }
  return key;
}

/**
 * Answers a `verifySignature` output: resolves to `true` only for a valid signature, `false`
 * when it is not valid or cannot be checked here (hand the result to `handleSignature`).
 * @param {import("./erpnet_auth_wasm.js").SignatureCheck} check
 */
export async function verifySignature(check) {
  const algorithm = ALGORITHMS[check.algorithm];
  if (!algorithm || !globalThis.crypto?.subtle) return false;
  try {
    const key = await importKey(check.algorithm, check.key);
    return await globalThis.crypto.subtle.verify(algorithm.verify, key, check.signature, ASCII.encode(check.signingInput));
  } catch {
    return false;
  }
}
