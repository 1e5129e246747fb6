/** The API's type, for typed clients. Type-only: importing it pulls no server code into a bundle. */
export type { AppRouter } from '../server/router.js';
