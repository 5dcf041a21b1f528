// The same app on oidc-client-ts: redirect sign-in, callback, renewal with the refresh token.
// (It checks no ID token signature.)
import { UserManager, WebStorageStateStore } from "oidc-client-ts";

const manager = new UserManager({
  authority: "https://demodb.my.erp.net/id",
  client_id: "my.spa",
  redirect_uri: `${location.origin}/`,
  scope: "openid profile offline_access read",
  automaticSilentRenew: true,
  userStore: new WebStorageStateStore({ store: sessionStorage }),
});
if (new URLSearchParams(location.search).has("code")) {
  await manager.signinRedirectCallback();
  history.replaceState(null, "", location.pathname);
}
let user = await manager.getUser();
if (!user) {
  await manager.signinRedirect();
} else {
  if (user.expired) user = await manager.signinSilent();
  const call = (u) => fetch("https://demodb.my.erp.net/api/domain/odata/Crm_Sales_Customers?$top=10", { headers: { authorization: `Bearer ${u.access_token}` } });
  let response = await call(user);
  if (response.status === 401) response = await call(await manager.signinSilent());
  console.log(await response.json());
}
