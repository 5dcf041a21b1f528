import { init, ErpNetAuth } from "erpnet-auth";
// The package README's setup: the page's head started compiling the preloaded wasm.
await init(window.erpnetAuthWasm);
new ErpNetAuth({ instance: "https://demodb.my.erp.net", clientId: "my.spa", redirectUri: `${location.origin}/` });
window.ready = performance.now() - window.t0;
