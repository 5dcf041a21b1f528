// @ts-check
// Browsers and bundlers. Call `await init()` once before creating a client: there is no
// top-level await, so the module loads anywhere (service workers, every bundler).
import initWasm from "./erpnet_auth_wasm.js";
import { wasmLoaded } from "./client.js";

let ready;

/**
 * Loads the WebAssembly. By default it is fetched from beside this module; pass a URL, a
 * `Response`, bytes or a `WebAssembly.Module` (or a promise of one: a compile the page
 * started in its head) to load it from elsewhere.
 */
export function init(source) {
  ready ??= initWasm(source === undefined ? undefined : { module_or_path: source }).then(() => wasmLoaded());
  return ready;
}

export { ErpNetAuth, ErpNetAuthError, SharedProvider, applicationSecretHash } from "./client.js";
export { IndexedDbStorage, MemoryStorage, WebStorage } from "./storage.js";
