// Type-checked with `tsc --noEmit --strict` against the installed package.
import { init, ErpNetAuth, ErpNetAuthError, MemoryStorage, applicationSecretHash } from "erpnet-auth";
import type { ClientOptions, ErrorCode, Event, SignInParameters } from "erpnet-auth";
import { Session, verifySignature } from "erpnet-auth/loop";
import type { Output } from "erpnet-auth/loop";
import { RedisStorage } from "erpnet-auth/redis";
import type { RedisCommandClient } from "erpnet-auth/redis";
import { ServerAuth } from "erpnet-auth/server";

export async function typed(): Promise<number> {
  await init();
  const options: ClientOptions = { instance: "https://demodb.my.erp.net", clientId: "my.trusted.app/first", redirectUri: "http://localhost/cb" };
  const auth = new ErpNetAuth({ ...options, storage: new MemoryStorage(), fetch: (input, init) => fetch(input, init) });
  const parameters: SignInParameters = { prompt: "login", extra: [["acr_values", "idp:local"]] };
  const url: string = await auth.signIn(parameters);
  const signedIn = await auth.handleCallback(url);
  const expires: number | undefined = signedIn.expiresAt;
  const stop = auth.on("signInRequired", (event) => console.log(event.reason.code));
  auth.on("*", (event) => console.log(event.type));
  stop();
  try {
    const response: Response = await auth.fetch("Crm_Sales_Customers", { method: "GET" });
    return response.status + (expires ?? 0);
  } catch (error) {
    if (error instanceof ErpNetAuthError && error.code === "foreign_origin") return -1;
    throw error;
  }
}

// Checked by the compiler: a mistyped code and options without a provider do not compile.
export function strict(error: ErpNetAuthError): boolean {
  const code: ErrorCode = error.code;
  // @ts-expect-error: not a code the library has
  const mistyped: ErrorCode = "foreign_orign";
  // @ts-expect-error: one of instance, issuer or endpoints is required
  const noProvider: ClientOptions = { clientId: "a", redirectUri: "http://localhost/cb" };
  // @ts-expect-error: and only one
  const twoProviders: ClientOptions = { instance: "https://demodb.my.erp.net", issuer: "https://id.example" };
  return code === "state_mismatch" && mistyped !== undefined && noProvider !== undefined && twoProviders !== undefined;
}

export function lowLevel(): void {
  const session = new Session({ instance: "https://demodb.my.erp.net", clientId: "a", redirectUri: "http://localhost/cb" }, undefined);
  const output: Output = session.poll();
  if (output.type === "http") {
    const id: number = output.request.id;
    session.handleResponse(Date.now(), id, 200, [], "{}");
  } else if (output.type === "event") {
    const event: Event = output.event;
    if (event.type === "callCompleted") console.log(event.status);
  } else if (output.type === "verifySignature") {
    void verifySignature(output.check).then((valid) => session.handleSignature(Date.now(), output.check.id, valid));
  }
  console.log(applicationSecretHash("secret"));
}

// The server entry and the Redis store, typed through the package's subpath exports.
export async function server(request: Request, redis: RedisCommandClient): Promise<Response> {
  const auth = new ServerAuth({
    instance: "https://demodb.my.erp.net",
    clientId: "my.trusted.app/first",
    clientSecret: "secret",
    redirectUri: "https://app.example/signin-callback",
    storage: new RedisStorage(redis, { prefix: "app:", commandTimeoutMs: 1000 }),
  });
  const name: string = auth.cookieName;
  const user = await auth.user(request);
  if (user === null) return auth.signIn(request, { prompt: "login" });
  const response: Response = await auth.fetch(request, "Crm_Sales_Customers");
  const written: boolean = await new MemoryStorage().set("k", "{}", { generation: 2, baseGeneration: 1 });
  return written && name ? response : auth.signOut(request);
}
