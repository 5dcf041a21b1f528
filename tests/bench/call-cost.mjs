// What one authorized call costs the npm package over a plain `fetch`, in Node: the same
// instant transport for both (a `Response` made in memory), so the difference is the client
// (boundary crossings, the core's work, the driver's bookkeeping). Sequential and 200 at once.
import { performance } from "node:perf_hooks";
import { init, ErpNetAuth } from "../../pkg/node.js";
import { fakeServer, manualClock, ROOT, CLIENT_ID, SECRET, REDIRECT } from "../js/fake-server.mjs";

await init();
const server = fakeServer();
const clock = manualClock();
server.useClock(clock.now);
const API = `${ROOT}/api/domain/odata/`;
const answer = (url, init) => Promise.resolve(new Response('{"value":[]}', { status: 200, headers: { "content-type": "application/json" } }));
const transport = (url, init) => (url.startsWith(API) ? answer(url, init) : server.fetch(url, init));
const auth = new ErpNetAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch: transport, now: clock.now });
await auth.handleCallback(server.authorize(await auth.signIn()));

const url = `${API}Crm_Sales_Customers?$top=10`;
async function sequential(call, n) {
  const start = performance.now();
  for (let i = 0; i < n; i++) await call();
  return ((performance.now() - start) * 1000) / n;
}
async function concurrent(call, n, width) {
  const start = performance.now();
  for (let i = 0; i < n; i += width) await Promise.all(Array.from({ length: width }, call));
  return ((performance.now() - start) * 1000) / n;
}
const plain = () => answer(url, { headers: { authorization: "Bearer x" } });
const client = () => auth.fetch("Crm_Sales_Customers?$top=10");

const runs = [];
for (let round = 0; round < 5; round++) {
  // Interleaved, so both see the same machine state.
  const base = await sequential(plain, 5000);
  const ours = await sequential(client, 5000);
  const baseC = await concurrent(plain, 20000, 200);
  const oursC = await concurrent(client, 20000, 200);
  runs.push([ours - base, oursC - baseC]);
}
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
console.log(
  `one authorized call over plain fetch, Node ${process.version}, median of 5 interleaved runs: sequential ${median(runs.map((r) => r[0])).toFixed(1)} µs, 200 concurrent ${median(runs.map((r) => r[1])).toFixed(1)} µs`,
);
auth.close();
