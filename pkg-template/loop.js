// @ts-check
// `erpnet-auth/loop`: the core's state machine itself, for a driver of your own (README,
// section 3), and the helpers the package's driver is built from. Load the WebAssembly first
// with `init()` from `erpnet-auth`.
export { Session, responseHeadersRead } from "./client.js";
export { withLock, withProcessLock } from "./lock.js";
export { verifySignature, verifyWithWebCrypto } from "./signatures.js";
