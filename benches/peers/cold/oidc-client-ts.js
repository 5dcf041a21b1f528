import { UserManager } from "oidc-client-ts";
window.keep = new UserManager({ authority: "https://demodb.my.erp.net/id", client_id: "my.spa", redirect_uri: `${location.origin}/` });
window.ready = performance.now() - window.t0;
