#!/usr/bin/env node
// The package's `chat` bin: runs the TypeScript CLI (client/cli.ts) through tsx's ESM loader.
import { register } from 'tsx/esm/api';

register();
await import('./cli.ts');
