import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/**
 * The browser page. `npm run build:web` (run by `npm start` when needed) builds it into web/dist,
 * which the server serves at `/`. `npx vite web` serves it with hot reload and forwards /trpc
 * (HTTP and WebSocket) to a server started with `npm run dev` on port 3000.
 */
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    reportCompressedSize: false,
  },
  server: {
    proxy: { '/trpc': { target: 'http://127.0.0.1:3000', ws: true } },
  },
});
