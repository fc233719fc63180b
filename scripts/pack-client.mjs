#!/usr/bin/env node
/**
 * Builds the client package (client/package.json) into client/dist and, given a directory, packs it:
 *
 *   npm run build:client              # client/dist only
 *   npm run pack:client -- <dir>      # client/dist, then exactly one .tgz written into <dir>
 *
 * 1. tsc (client/tsconfig.build.json) compiles the client's entries (index, react, cli) to ESM and
 *    emits declarations with `stripInternal`, so the server context's members stay out of them.
 * 2. The JavaScript of client/ is copied into dist/ (the server's own output is not: the client
 *    imports only types from src/, and step 4 proves it).
 * 3. API Extractor rolls index.d.ts and everything it reaches (the AppRouter type, the DTOs) into
 *    one self-contained dist/index.d.ts; dist/react.d.ts imports its types from ./index.js.
 * 4. Every import of dist/ is checked: relative inside dist/, node: built-ins, or a package the
 *    client declares (dependencies and peers). A path into src/ or a server-only package fails, and
 *    so does a router type that reaches beyond tRPC, the context and the DTOs of src/domain/.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const clientDir = join(root, 'client');
const buildDir = join(clientDir, '.build');
const distDir = join(clientDir, 'dist');
const pkg = JSON.parse(readFileSync(join(clientDir, 'package.json'), 'utf8'));

const args = process.argv.slice(2);
const buildOnly = args.includes('--build-only');
const dest = args.find((a) => !a.startsWith('--'));
if (!buildOnly && !dest) {
  console.error('usage: npm run pack:client -- <dir>   (or npm run build:client for client/dist only)');
  process.exit(2);
}

function fail(message) {
  console.error(`pack-client: ${message}`);
  process.exit(1);
}

function files(dir, suffix) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p, suffix));
    else if (p.endsWith(suffix)) out.push(p);
  }
  return out;
}

// 1. Compile.
rmSync(buildDir, { recursive: true, force: true });
rmSync(distDir, { recursive: true, force: true });
const tsc = join(root, 'node_modules', '.bin', 'tsc');
try {
  execFileSync(tsc, ['-p', join(clientDir, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
} catch {
  fail('tsc failed');
}

// 2. The client's JavaScript (not the recipes under examples/).
const emitted = join(buildDir, 'client');
mkdirSync(distDir, { recursive: true });
for (const file of files(emitted, '.js')) {
  const rel = relative(emitted, file);
  if (rel.startsWith('examples')) continue;
  mkdirSync(dirname(join(distDir, rel)), { recursive: true });
  cpSync(file, join(distDir, rel));
}

// 3. Declarations: one rolled-up index.d.ts, and react.d.ts over it.
const { Extractor, ExtractorConfig } = await import('@microsoft/api-extractor');
const extractorConfig = ExtractorConfig.prepare({
  configObject: {
    projectFolder: clientDir,
    mainEntryPointFilePath: join(emitted, 'index.d.ts'),
    bundledPackages: [],
    compiler: {
      overrideTsconfig: {
        compilerOptions: {
          target: 'ES2023',
          lib: ['ES2023', 'ESNext.Disposable'],
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: true,
          types: ['node'],
        },
        include: [join(emitted, 'index.d.ts')],
      },
    },
    apiReport: { enabled: false },
    docModel: { enabled: false },
    tsdocMetadata: { enabled: false },
    dtsRollup: { enabled: true, untrimmedFilePath: join(distDir, 'index.d.ts') },
    messages: {
      compilerMessageReporting: { default: { logLevel: 'error' } },
      extractorMessageReporting: {
        default: { logLevel: 'none' },
        'ae-wrong-input-file-type': { logLevel: 'error' },
        'ae-unresolved-link': { logLevel: 'none' },
      },
      tsdocMessageReporting: { default: { logLevel: 'none' } },
    },
  },
  configObjectFullPath: undefined,
  packageJsonFullPath: join(clientDir, 'package.json'),
});
const result = Extractor.invoke(extractorConfig, { localBuild: true, showVerboseMessages: false });
if (!result.succeeded) fail(`API Extractor: ${result.errorCount} errors`);
cpSync(join(emitted, 'react.d.ts'), join(distDir, 'react.d.ts'));

// 4. What dist/ may import.
const allowed = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})]);
allowed.delete('@types/react');
const importRe = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;
const packageOf = (spec) => (spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
const problems = [];
for (const file of [...files(distDir, '.js'), ...files(distDir, '.d.ts')]) {
  const text = readFileSync(file, 'utf8');
  for (const [, spec] of text.matchAll(importRe)) {
    const where = relative(distDir, file);
    if (spec.startsWith('.')) {
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(distDir) || !existsSync(target.replace(/\.d\.ts$/, '.js'))) problems.push(`${where}: ${spec} is outside the package`);
    } else if (!spec.startsWith('node:') && !allowed.has(packageOf(spec))) {
      problems.push(`${where}: imports ${spec}, which the client package does not declare`);
    }
  }
}
// The router's types name only tRPC, the call context and the DTOs of src/domain/ (plain
// interfaces): a procedure that returns a service's or a library's type is caught here.
const routerDts = join(buildDir, 'src', 'trpc', 'router.d.ts');
for (const [, spec] of readFileSync(routerDts, 'utf8').matchAll(/import\("([^"]+)"\)/g)) {
  if (!/^(@trpc\/server(\/.*)?|\.\.\/domain\/[\w-]+\.js|\.\/context\.js)$/.test(spec)) {
    problems.push(`src/trpc/router.ts: the API's types reach ${spec} (router outputs must be DTOs of src/domain/)`);
  }
}
if (problems.length > 0) fail(`the package would not stand alone:\n  ${problems.join('\n  ')}`);

const cli = join(distDir, 'cli.js');
if (!readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node')) fail('dist/cli.js has no #! line');
const size = statSync(join(distDir, 'index.d.ts')).size;
console.log(`built ${pkg.name}@${pkg.version} into client/dist (index.d.ts ${Math.round(size / 1024)} KiB)`);

// 5. Pack.
if (dest) {
  const out = resolve(process.cwd(), dest);
  mkdirSync(out, { recursive: true });
  const json = execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: clientDir, encoding: 'utf8' });
  const [packed] = JSON.parse(json);
  console.log(join(out, packed.filename));
}
