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

if (new URLSearchParams(location.search).has("code")) {
  await auth.handleCallback(location.href);
  history.replaceState(null, "", location.pathname);
}
await auth.ready();
if (auth.isSignedIn) document.getElementById("result").textContent = String(await window.callApi());
document.body.dataset.state = auth.isSignedIn ? "signed-in" : "signed-out";
