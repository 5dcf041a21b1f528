// The same public SPA with its tokens in memory only (the browser-apps BCP's advice): the
// pending sign-in survives the redirect in sessionStorage, and a reload restores the
// session with a top-level prompt=none redirect instead of reading a stored refresh token.
import { init, ErpNetAuth } from "./erpnet-auth/index.js";

window.appEvents = [];
await init();
const auth = new ErpNetAuth({
  instance: location.origin,
  clientId: "my.spa",
  redirectUri: `${location.origin}/spa/memory.html`,
  persistTokens: false,
});
auth.on("*", (event) => window.appEvents.push(event.type));
document.getElementById("signin").addEventListener("click", () => auth.redirectToSignIn());
window.callApi = async () => (await auth.fetch("Crm_Sales_Customers?$top=1")).status;

const returned = new URLSearchParams(location.search);
if (returned.has("code") || returned.has("error")) {
  try {
    await auth.handleCallback(location.href);
  } catch (error) {
    // login_required: no session at the provider; the user signs in with the button.
    window.signInError = error.oauthError ?? error.code;
  }
  history.replaceState(null, "", location.pathname);
} else {
  await auth.ready();
  // Only on a page load that is not the callback: a refusal never loops.
  if (!auth.isSignedIn) await auth.restoreSession();
}
if (auth.isSignedIn) document.getElementById("result").textContent = String(await window.callApi());
document.body.dataset.state = auth.isSignedIn ? "signed-in" : window.signInError ? `signed-out:${window.signInError}` : "signed-out";
