import { init, ErpNetAuth } from "erpnet-auth";
await init();
new ErpNetAuth({ instance: "https://demodb.my.erp.net", clientId: "my.spa", redirectUri: `${location.origin}/` });
window.ready = performance.now() - window.t0;
