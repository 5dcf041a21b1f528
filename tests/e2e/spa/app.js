// A public single-page app (PKCE, no secret) on the erpnet-auth package.
import { init, ErpNetAuth, IndexedDbStorage } from "./erpnet-auth/index.js";

window.appEvents = [];
await init();
const auth = new ErpNetAuth({
  instance: location.origin,
  clientId: "my.spa",
  redirectUri: `${location.origin}/spa/`,
  storage: new IndexedDbStorage(),
});
auth.on("*", (event) => window.appEvents.push(event.type));
document.getElementById("signin").addEventListener("click", () => auth.redirectToSignIn());
window.callApi = async () => (await auth.fetch("Crm_Sales_Customers?$top=1")).status;

const returned = new URLSearchParams(location.search);
if (returned.has("code") || returned.has("error")) {
  try {
    await auth.handleCallback(location.href);
  } catch (error) {
    // A cancelled or refused sign-in is shown, never answered with another redirect to the
    // login page (the user just said no there).
    window.signInError = error.oauthError ?? error.code;
    document.getElementById("result").textContent =
      error.oauthError === "access_denied" ? "Sign-in cancelled." : `Sign-in failed (${window.signInError}).`;
  }
  history.replaceState(null, "", location.pathname);
}
await auth.ready();
if (auth.isSignedIn) document.getElementById("result").textContent = String(await window.callApi());
document.body.dataset.state = auth.isSignedIn ? "signed-in" : window.signInError ? "sign-in-failed" : "signed-out";
