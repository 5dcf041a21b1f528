import * as client from "openid-client";
window.keep = client.randomState;
window.ready = performance.now() - window.t0;
