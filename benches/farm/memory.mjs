// Bytes per idle signed-in session in one Node process: 10,000 clients restored from a real
// signed-in snapshot (the test provider), measured as the growth of the process's memory
// (JS heap, wasm linear memory and other buffers), minus the token strings themselves.
//   node --expose-gc benches/farm/memory.mjs [sessions]
import { fileURLToPath } from "node:url";
import { init, ErpNetAuth, MemoryStorage, SharedProvider } from "../../pkg/node.js";
import { signInAtProvider, startProcess } from "../../tests/idp/login.mjs";

const SESSIONS = Number(process.argv[2] ?? 10_000);
// "separate": each client parses its options and holds its own provider documents (and its
// snapshot carries them); "shared": one SharedProvider for the process.
const MODE = process.argv[3] ?? "shared";
const idp = await startProcess(fileURLToPath(new URL("../../tests/idp/server.mjs", import.meta.url)));
const root = `http://127.0.0.1:${idp.port}`;
await init();
const options = { instance: root, clientId: "my.trusted.app/first", clientSecret: "my-plain-app-secret", redirectUri: "http://localhost/signin-callback" };

try {
  const storage = new MemoryStorage();
  const provider = MODE === "shared" ? new SharedProvider(options) : null;
  const clientOptions = provider ? { provider } : options;
  const first = new ErpNetAuth({ ...clientOptions, storage, storageKey: "user" });
  await first.handleCallback(await signInAtProvider(await first.signIn()));
  await first.fetch("Crm_Sales_Customers");
  const snapshot = storage.get("user");
  first.close();
  const parsed = JSON.parse(snapshot);
  const tokenBytes = [parsed.tokens?.access_token, parsed.tokens?.refresh_token, parsed.id_token].reduce((n, t) => n + (t?.length ?? 0), 0);

  const measure = () => {
    globalThis.gc?.();
    const m = process.memoryUsage();
    return { heap: m.heapUsed, external: m.external + m.arrayBuffers, rss: m.rss };
  };
  const stores = [];
  for (let i = 0; i < SESSIONS; i++) {
    const store = new MemoryStorage();
    store.set(`user-${i}`, snapshot.replace(parsed.tokens.access_token, parsed.tokens.access_token.slice(0, -6) + String(i).padStart(6, "0")));
    stores.push(store);
  }
  const before = measure();
  const clients = [];
  for (let i = 0; i < SESSIONS; i++) {
    const client = new ErpNetAuth({ ...clientOptions, storage: stores[i], storageKey: `user-${i}` });
    await client.ready();
    clients.push(client);
  }
  const after = measure();
  const perSession = (field) => (after[field] - before[field]) / SESSIONS;
  const total = perSession("heap") + perSession("external");
  console.log(`sessions                      ${SESSIONS} (${MODE} provider)`);
  console.log(`snapshot bytes per session    ${snapshot.length} (tokens ${tokenBytes})`);
  console.log(`JS heap per session           ${perSession("heap").toFixed(0)} B`);
  console.log(`wasm + buffers per session    ${perSession("external").toFixed(0)} B`);
  console.log(`rss per session               ${perSession("rss").toFixed(0)} B`);
  console.log(`beyond the tokens             ${(total - tokenBytes).toFixed(0)} B per session`);
  for (const client of clients) client.close();
} finally {
  idp.stop();
}
