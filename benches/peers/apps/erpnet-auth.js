// The benchmark's browser app on erpnet-auth: sign in, callback, one self-renewing API call.
import { init, ErpNetAuth } from "erpnet-auth";

await init();
const auth = new ErpNetAuth({
  instance: "https://demodb.my.erp.net",
  clientId: "my.spa",
  redirectUri: `${location.origin}/`,
  persistTokens: false,
});
const returned = new URLSearchParams(location.search);
if (returned.has("code") || returned.has("error")) {
  await auth.handleCallback(location.href);
  history.replaceState(null, "", location.pathname);
}
if (!auth.isSignedIn) await auth.redirectToSignIn();
else console.log(await (await auth.fetch("Crm_Sales_Customers?$top=10")).json());
