// The same app on auth0-spa-js (refresh tokens on; it checks the ID token signature).
import { createAuth0Client } from "@auth0/auth0-spa-js";

const auth0 = await createAuth0Client({
  domain: "demodb.my.erp.net",
  clientId: "my.spa",
  useRefreshTokens: true,
  authorizationParams: { redirect_uri: `${location.origin}/`, scope: "openid profile offline_access read" },
});
if (new URLSearchParams(location.search).has("code")) {
  await auth0.handleRedirectCallback();
  history.replaceState(null, "", location.pathname);
}
if (!(await auth0.isAuthenticated())) {
  await auth0.loginWithRedirect();
} else {
  const token = await auth0.getTokenSilently();
  const response = await fetch("https://demodb.my.erp.net/api/domain/odata/Crm_Sales_Customers?$top=10", { headers: { authorization: `Bearer ${token}` } });
  console.log(await response.json());
}
