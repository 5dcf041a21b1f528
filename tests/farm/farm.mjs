// Drives farm workers (tests/farm/worker.mjs) from a test or a benchmark: N processes, one
// user session in Redis, commands as JSON lines.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const worker = fileURLToPath(new URL("./worker.mjs", import.meta.url));

/** Starts one worker; resolves once it is ready. */
export async function startWorker(env) {
  const child = spawn(process.execPath, [worker], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const lines = [];
  const waiting = [];
  let buffer = "";
  child.stdout.on("data", (d) => {
    buffer += d;
    for (let end; (end = buffer.indexOf("\n")) >= 0; ) {
      const line = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      const next = waiting.shift();
      if (next) next.resolve(line);
      else lines.push(line);
    }
  });
  child.on("exit", (code, signal) => {
    for (const next of waiting.splice(0)) next.reject(new Error(`worker exited ${code ?? signal}: ${stderr}`));
  });
  const nextLine = () =>
    lines.length > 0 ? Promise.resolve(lines.shift()) : new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  const ready = await nextLine();
  return {
    pid: ready.pid,
    signedIn: ready.signedIn,
    /** Sends a command; resolves to its answer. */
    send(command) {
      child.stdin.write(`${JSON.stringify(command)}\n`);
      return nextLine();
    },
    kill(signal = "SIGTERM") {
      child.kill(signal);
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin.end(`${JSON.stringify({ exit: true })}\n`);
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
