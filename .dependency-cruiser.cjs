// Structure rules for `npm run check:deps` (dependency-cruiser). Paths are relative to the
// repository root. TypeScript 7 has no JavaScript API, so sources are parsed with swc.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles in src/ (type-only imports included).',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'domain-stands-alone',
      severity: 'error',
      comment: 'src/domain/ is what every layer may import: it imports nothing else from src/.',
      from: { path: '^src/domain/' },
      to: { path: '^src/', pathNot: '^src/domain/' },
    },
    {
      name: 'store-below-services',
      severity: 'error',
      comment: 'src/store/ knows tables, not services, routers or tRPC.',
      from: { path: '^src/store/' },
      to: { path: '^src/(services|routers|trpc)/' },
    },
    {
      name: 'services-without-trpc',
      severity: 'error',
      comment: 'src/services/ holds the rules; the transport (tRPC, routers) calls it, never the reverse.',
      from: { path: '^src/services/' },
      to: { path: ['^src/(trpc|routers)/', '(^|/)node_modules/@trpc/'] },
    },
    {
      name: 'stream-below-services',
      severity: 'error',
      comment: 'src/stream/ is the generic stream engine: no chat rules, no tRPC.',
      from: { path: '^src/stream/' },
      to: { path: '^src/(services|routers|trpc)/' },
    },
    {
      name: 'transport-stands-alone',
      severity: 'error',
      comment:
        'src/transport/ is a WebSocket transport for any tRPC router: it imports nothing from src/ outside itself (the chat reaches it through options).',
      from: { path: '^src/transport/' },
      to: { path: '^src/', pathNot: '^src/transport/' },
    },
    {
      name: 'client-types-only-from-src',
      severity: 'error',
      comment: 'client/ ships without the server: it imports from src/ only with `import type`.',
      from: { path: '^client/' },
      to: { path: '^src/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'Every import resolves (otherwise the rules above would not see it).',
      from: { path: '^(src|client)/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    parser: 'swc',
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    // Build output of the client package (npm run build:client), not source.
    exclude: { path: '^client/(dist|\\.build)/' },
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.mjs', '.json'],
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
};
