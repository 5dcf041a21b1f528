// @ts-check
// Node: the WebAssembly is read from disk. Call `await init()` once before creating a client.
import { readFile } from "node:fs/promises";
import { initSync } from "./erpnet_auth_wasm.js";
import { wasmLoaded } from "./client.js";

let ready;

/** Loads the WebAssembly from the package directory (or from `source`: bytes or a Module). */
export function init(source) {
  ready ??= (source !== undefined ? Promise.resolve(source) : readFile(new URL("./erpnet_auth_wasm_bg.wasm", import.meta.url))).then(
    (module) => {
      initSync({ module });
      wasmLoaded();
    },
  );
  return ready;
}

export { ErpNetAuth, ErpNetAuthError, SharedProvider, applicationSecretHash } from "./client.js";
export { IndexedDbStorage, MemoryStorage, WebStorage } from "./storage.js";
