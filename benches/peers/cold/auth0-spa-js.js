import { Auth0Client } from "@auth0/auth0-spa-js";
window.keep = new Auth0Client({ domain: "demodb.my.erp.net", clientId: "my.spa", authorizationParams: { redirect_uri: `${location.origin}/` } });
window.ready = performance.now() - window.t0;
