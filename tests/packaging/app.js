// A small browser app: sign in, handle the callback, call the API. Bundled with esbuild to
// measure what the package costs an application; also run in headless Chromium.
import { init, ErpNetAuth, WebStorage } from "erpnet-auth";

export async function main({ fetch, authorize, storage = new WebStorage(sessionStorage) }) {
  await init();
  const auth = new ErpNetAuth({
    instance: "https://demodb.my.erp.net",
    clientId: "my.trusted.app/first",
    clientSecret: "my-plain-app-secret",
    redirectUri: "http://localhost/signin-callback",
    storage,
    fetch,
  });
  const url = await auth.signIn();
  await auth.handleCallback(authorize(url));
  const response = await auth.fetch("Crm_Sales_Customers?$top=10");
  return { url, status: response.status, body: await response.json() };
}
