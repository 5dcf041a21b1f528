// The package's declarations (pkg-template/*.d.ts) against its JavaScript, both ways, through
// the TypeScript checker over the program `tsc -p tests/js/types` type-checks: every export
// of an entry and every member of an exported class is declared, every declaration is
// implemented, and what the JavaScript is (JSDoc, inferred) fits what is declared. Error
// codes: every code the core's `code()` functions return is in `ErrorCode` (or, for the
// causes, `ErrorDetail`; for warnings, `WarningCode`). Needs the built package (`make pkg`)
// for the generated erpnet_auth_wasm.d.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const template = join(root, "pkg-template");

// Each entry of package.json `exports` with its declarations.
const ENTRIES = [
  ["index.js", "index.d.ts"],
  ["node.js", "index.d.ts"],
  ["loop.js", "loop.d.ts"],
  ["server.js", "server.d.ts"],
  ["redis.js", "redis.d.ts"],
];

const configPath = join(here, "types", "tsconfig.json");
const config = ts.parseJsonConfigFileContent(ts.readConfigFile(configPath, ts.sys.readFile).config, ts.sys, dirname(configPath));
const program = ts.createProgram({ rootNames: config.fileNames, options: config.options });
const checker = program.getTypeChecker();

const moduleOf = (file) => {
  const source = program.getSourceFile(join(template, file));
  assert.ok(source, `${file} is in the checked program`);
  return checker.getSymbolAtLocation(source);
};
const resolve = (symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);
const typeOnly = (symbol) => (symbol.declarations ?? []).some((d) => ts.isExportSpecifier(d) && (d.isTypeOnly || d.parent.parent.isTypeOnly));
/** The values a module exports (not its types), by name. */
const valuesOf = (file) =>
  new Map(
    checker
      .getExportsOfModule(moduleOf(file))
      .filter((e) => !typeOnly(e) && resolve(e).flags & ts.SymbolFlags.Value)
      .map((e) => [e.name, resolve(e)]),
  );
// ES private members (`#x`) are no one's business; `prototype` is every class's.
const members = (type) => checker.getPropertiesOfType(type).filter((p) => !p.name.startsWith("__#") && !p.name.startsWith("#") && p.name !== "prototype");
const typeOf = (symbol) => checker.getTypeOfSymbol(symbol);
const instanceOf = (symbol) => checker.getDeclaredTypeOfSymbol(symbol);
const isClass = (symbol) => (symbol.flags & ts.SymbolFlags.Class) !== 0;

/** Where the two sides differ: names on one side only, and members whose types do not fit. */
function compare(where, implemented, declared, problems) {
  const have = new Map(members(implemented).map((m) => [m.name, m]));
  const want = new Map(members(declared).map((m) => [m.name, m]));
  for (const name of have.keys()) if (!want.has(name)) problems.push(`${where}.${name} is implemented but not declared`);
  for (const name of want.keys()) if (!have.has(name)) problems.push(`${where}.${name} is declared but not implemented`);
  for (const [name, member] of want) {
    const mine = have.get(name);
    if (mine && !checker.isTypeAssignableTo(typeOf(mine), typeOf(member))) {
      problems.push(`${where}.${name}: the implementation (${checker.typeToString(typeOf(mine))}) does not fit the declaration (${checker.typeToString(typeOf(member))})`);
    }
  }
}

test("the JavaScript type-checks against the declarations (tsc --checkJs)", () => {
  const diagnostics = ts.getPreEmitDiagnostics(program);
  const text = ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" });
  assert.equal(diagnostics.length, 0, text);
});

test("every export and every member of an exported class has its declaration, and every declaration its implementation", () => {
  const problems = [];
  for (const [js, dts] of ENTRIES) {
    const implemented = valuesOf(js);
    const declared = valuesOf(dts);
    for (const name of implemented.keys()) if (!declared.has(name)) problems.push(`${js} exports ${name}, which ${dts} does not declare`);
    for (const name of declared.keys()) if (!implemented.has(name)) problems.push(`${dts} declares ${name}, which ${js} does not export`);
    for (const [name, declaration] of declared) {
      const implementation = implemented.get(name);
      if (!implementation) continue;
      if (isClass(declaration) && isClass(implementation)) {
        compare(`${name}`, instanceOf(implementation), instanceOf(declaration), problems);
        compare(`${name} (static)`, typeOf(implementation), typeOf(declaration), problems);
      }
      if (!checker.isTypeAssignableTo(typeOf(implementation), typeOf(declaration))) {
        problems.push(`${js} ${name}: the implementation does not fit its declaration in ${dts}`);
      }
    }
  }
  assert.deepEqual([...new Set(problems)], []);
});

/** The string literals of a declared union type alias. */
function literalsOf(file, name) {
  const symbol = checker.getExportsOfModule(moduleOf(file)).find((e) => e.name === name);
  assert.ok(symbol, `${file} declares ${name}`);
  const type = checker.getDeclaredTypeOfSymbol(resolve(symbol));
  return new Set((type.isUnion() ? type.types : [type]).filter((t) => t.isStringLiteral()).map((t) => t.value));
}

/** The codes the core's `code()` functions return (src/**.rs), by file. */
function coreCodes() {
  const codes = new Map();
  const walk = (dir) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith(".rs")) {
        const source = readFileSync(path, "utf8");
        for (const match of source.matchAll(/fn code\(&self\) -> &'static str \{([\s\S]*?)\n    \}/g)) {
          for (const code of match[1].matchAll(/"([a-z0-9_]+)"/g)) codes.set(code[1], path.slice(root.length + 1));
        }
      }
    }
  };
  walk(join(root, "src"));
  return codes;
}

test("every code the core returns is a declared error code, cause or warning", () => {
  const declared = new Set([...literalsOf("index.d.ts", "ErrorDetail"), ...literalsOf("index.d.ts", "WarningCode")]);
  const codes = coreCodes();
  assert.ok(codes.size > 50, `the core's codes were found (${codes.size})`);
  const missing = [...codes].filter(([code]) => !declared.has(code)).map(([code, file]) => `${code} (${file})`);
  assert.deepEqual(missing, []);
  // And the JavaScript's own codes are checked by the type check: ErpNetAuthError takes an ErrorCode.
  assert.ok(literalsOf("index.d.ts", "ErrorCode").has("not_initialized"));
});

/** The members a class declares itself (inherited ones, such as Error's, are its parent's). */
const ownMembers = (symbol) =>
  members(instanceOf(symbol)).filter((m) => (m.declarations ?? []).some((d) => ts.isClassDeclaration(d.parent) && d.parent.name?.text === symbol.name));

test("the npm README's API section names every export, every member of an exported class, every event and every error code", () => {
  const readme = readFileSync(join(template, "README.md"), "utf8");
  const start = readme.indexOf("\n## API\n");
  assert.ok(start > 0, "the README has an API section");
  const api = readme.slice(start);
  const escape = (name) => name.replace(/[$()*+.?[\\\]^{|}]/g, "\\$&");
  // A name in code: `name`, `name(…)`, `new Name(…)`, `name: …`.
  const names = (text, name) => new RegExp(`\`(new )?${escape(name)}[\`( :]`).test(text);
  const missing = [];
  for (const [js, dts] of ENTRIES) {
    // The low-level loop has its own section (3); its names are looked for in the whole README.
    const text = js === "loop.js" ? readme : api;
    for (const [name, symbol] of valuesOf(dts)) {
      if (!names(text, name)) missing.push(`${dts}: ${name}`);
      if (js !== "loop.js" && isClass(symbol)) for (const member of ownMembers(symbol)) if (!names(api, member.name)) missing.push(`${dts}: ${name}.${member.name}`);
    }
  }
  const events = checker.getExportsOfModule(moduleOf("index.d.ts")).find((e) => e.name === "ErpNetAuthEvent");
  const eventTypes = checker.getDeclaredTypeOfSymbol(resolve(events)).types.map((t) => checker.getTypeOfSymbol(t.getProperty("type")).value);
  assert.ok(eventTypes.length > 20, `the event types were found (${eventTypes.length})`);
  for (const type of eventTypes) if (!names(api, type)) missing.push(`event ${type}`);
  for (const code of literalsOf("index.d.ts", "ErrorCode")) if (!api.includes(`| \`${code}\` |`)) missing.push(`error code ${code} (a row of the table)`);
  assert.deepEqual([...new Set(missing)], []);
});
