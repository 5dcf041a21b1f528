// Signs a user in at the test provider's development login and consent pages with fetch,
// as a browser would: cookies kept, redirects followed by hand. Returns the URL the browser
// is finally sent to (the client's redirect URI with the code). Test support only.
export async function signInAtProvider(authorizationUrl, { user = "demo" } = {}) {
  const provider = new URL(authorizationUrl).origin;
  const jar = new Map();
  let url = new URL(authorizationUrl);
  let form = null;
  for (let step = 0; step < 20; step++) {
    const response = await fetch(url, {
      method: form ? "POST" : "GET",
      body: form ?? undefined,
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") },
      redirect: "manual",
    });
    form = null;
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const at = pair.indexOf("=");
      jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get("location"), url);
      if (next.origin !== provider) return next.href;
      url = next;
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) throw new Error(`provider answered ${response.status}: ${html.slice(0, 300)}`);
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    if (!action) throw new Error("a page without a form");
    const fields = new URLSearchParams();
    for (const [, name, value] of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) fields.set(name, value);
    if (fields.get("prompt") === "login") {
      fields.set("login", user);
      fields.set("password", "demo");
    }
    url = new URL(action.replaceAll("&amp;", "&"), url);
    form = fields;
  }
  throw new Error("too many steps at the provider");
}

/** Starts `node script args…`, waits for its first JSON line, returns it with a stop(). */
export async function startProcess(script, args = [], env = {}) {
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const line = await new Promise((resolve, reject) => {
    let buffer = "";
    child.stdout.on("data", (d) => {
      buffer += d;
      const end = buffer.indexOf("\n");
      if (end >= 0) resolve(buffer.slice(0, end));
    });
    child.on("exit", (code) => reject(new Error(`${script} exited ${code}: ${stderr}`)));
  });
  return { ...JSON.parse(line), stop: () => child.kill() };
}
