import * as oauth from "oauth4webapi";
window.keep = oauth.generateRandomState;
window.ready = performance.now() - window.t0;
