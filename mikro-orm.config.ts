/**
 * MikroORM configuration for tooling (the server builds its own from src/config.ts).
 * DATABASE_URL must point at a PostgreSQL database.
 */
import { ormOptions } from './src/store/database.js';

export default ormOptions(process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres');
