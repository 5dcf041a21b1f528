// The little of Node's API the package's JavaScript uses (the repository has no @types/node).
declare module "node:fs/promises" {
  export function readFile(path: URL | string): Promise<Uint8Array>;
}
