// Before `init()` has settled nothing of the package works: each entry says so with a typed
// error instead of failing inside the WebAssembly glue. Its own file: loading is once per
// process, and the other test files load at their top.
import { test } from "node:test";
import assert from "node:assert/strict";

import { init, ErpNetAuth, ErpNetAuthError, SharedProvider, applicationSecretHash } from "../../pkg/node.js";
import { Session, responseHeadersRead } from "../../pkg/loop.js";
import { ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

const options = { instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT };
const notInitialized = (e) => e instanceof ErpNetAuthError && e.code === "not_initialized" && /await init\(\)/.test(e.message);
const entries = {
  "new ErpNetAuth": () => new ErpNetAuth(options),
  "new SharedProvider": () => new SharedProvider(options),
  "new Session": () => new Session(options),
  applicationSecretHash: () => applicationSecretHash("secret"),
  responseHeadersRead: () => responseHeadersRead(),
};

test("before init() settled, every entry fails with not_initialized; after it, they work", async () => {
  for (const [name, entry] of Object.entries(entries)) assert.throws(entry, notInitialized, `${name} before init()`);
  const loading = init();
  for (const [name, entry] of Object.entries(entries)) assert.throws(entry, notInitialized, `${name} while init() runs`);
  await loading;
  for (const entry of Object.values(entries)) entry();
  assert.equal(applicationSecretHash("secret"), "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=");
});
