// Test fixture: a real Better Auth server (email+password, jwt plugin,
// PostgreSQL via pg) for Go integration tests. Configured only by
// environment variables; see README.md.
import http from "node:http";
import process from "node:process";

function fail(msg, err) {
  process.stderr.write(`betterauth fixture: ${msg}${err ? `: ${err?.stack ?? err}` : ""}\n`);
  process.exit(1);
}

let server;
let pool;
let shuttingDown = false;

async function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  if (!server) process.exit(0); // signalled during start-up: nothing to drain
  const timer = setTimeout(() => fail(`timed out shutting down after ${signal}`), 5000);
  timer.unref();
  try {
    await new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await pool.end();
  } catch (e) {
    fail("error during shutdown", e);
  }
  process.exit(0);
}

process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
process.on("unhandledRejection", (e) => fail("unhandled rejection", e));

// Load the packages only after the signal handlers are installed, so a
// SIGTERM/SIGINT that arrives during start-up also exits with status 0.
const [{ default: pg }, { betterAuth }, { getMigrations }, { toNodeHandler }, { jwt, toExpJWT }] = await Promise.all([
  import("pg"),
  import("better-auth"),
  import("better-auth/db/migration"),
  import("better-auth/node"),
  import("better-auth/plugins/jwt"),
]);

function requireEnv(name) {
  const v = process.env[name];
  if (v === undefined || v === "") fail(`environment variable ${name} is required`);
  return v;
}

const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  ES256: { alg: "ES256" }, // P-256 (the plugin's type does not accept a crv for ES256)
};

// ---- configuration -------------------------------------------------------
const portStr = requireEnv("PORT");
const port = Number(portStr);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`PORT must be an integer 1..65535, got ${JSON.stringify(portStr)}`);

const rawBaseURL = requireEnv("BETTER_AUTH_URL");
let baseURL;
try {
  const u = new URL(rawBaseURL);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme must be http or https");
  if (u.pathname !== "/" || u.search || u.hash) throw new Error("must be an origin without path, query or fragment");
  baseURL = u.origin; // no trailing slash: this string becomes the JWT iss/aud
} catch (e) {
  fail(`BETTER_AUTH_URL ${JSON.stringify(rawBaseURL)} is invalid (${e.message})`);
}

const secret = requireEnv("BETTER_AUTH_SECRET");
if (secret.length < 32) fail("BETTER_AUTH_SECRET must be at least 32 characters");

const databaseURL = requireEnv("DATABASE_URL");

const alg = process.env.JWT_ALG || "EdDSA";
const keyPairConfig = KEY_PAIR_CONFIGS[alg];
if (!keyPairConfig) fail(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}, got ${JSON.stringify(alg)}`);

const jwtOptions = {};
if (process.env.JWT_EXPIRATION) {
  // plugin default: "15m"
  try {
    toExpJWT(process.env.JWT_EXPIRATION, 0); // same parser the plugin uses when signing
  } catch (e) {
    fail(`JWT_EXPIRATION ${JSON.stringify(process.env.JWT_EXPIRATION)} is invalid (${e.message})`);
  }
  jwtOptions.expirationTime = process.env.JWT_EXPIRATION;
}
if (process.env.JWT_ISSUER) jwtOptions.issuer = process.env.JWT_ISSUER; // default: BETTER_AUTH_URL
if (process.env.JWT_AUDIENCE) jwtOptions.audience = process.env.JWT_AUDIENCE; // default: BETTER_AUTH_URL

// ---- Better Auth ---------------------------------------------------------
pool = new pg.Pool({ connectionString: databaseURL, max: 5 });
pool.on("error", (err) => process.stderr.write(`betterauth fixture: idle pg client error: ${err.message}\n`));

const options = {
  appName: "todo-betterauth-fixture",
  baseURL,
  basePath: "/api/auth",
  secret,
  database: pool,
  trustedOrigins: [baseURL],
  emailAndPassword: {
    enabled: true,
    requireEmailVerification: false,
    autoSignIn: true,
  },
  emailVerification: {
    sendOnSignUp: false,
  },
  // Tests sign up many users quickly from one IP.
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  // stdout carries only the READY line; all Better Auth logs go to stderr.
  logger: {
    level: "warn",
    log: (level, message, ...args) => console.error(`[better-auth] ${level.toUpperCase()} ${message}`, ...args),
  },
  plugins: [
    jwt({
      jwks: { keyPairConfig },
      jwt: jwtOptions,
    }),
  ],
};

async function main() {
  // Fail fast with a clear message if the database is unreachable.
  try {
    await pool.query("select 1");
  } catch (e) {
    fail(`cannot connect to DATABASE_URL`, e.message);
  }

  // Create/upgrade Better Auth's tables (user, session, account,
  // verification, jwks) in the database.
  const { runMigrations } = await getMigrations(options);
  await runMigrations();

  const auth = betterAuth(options);
  await auth.$context; // surface configuration errors before READY

  // Mint the signing key now (the plugin would otherwise do it lazily on the
  // first /jwks or /token request, and concurrent first requests could race
  // and mint two keys). On a reused database this returns the stored keys.
  const { keys } = await auth.api.getJwks();
  const otherAlgs = [...new Set(keys.map((k) => k.alg))].filter((a) => a !== alg);
  if (otherAlgs.length > 0) {
    process.stderr.write(
      `betterauth fixture: warning: the jwks table already holds keys with alg ${otherAlgs.join(", ")}; ` +
        `tokens are signed with the newest ${alg} key if one exists, else with the newest key of any alg. ` +
        `Use a fresh database per JWT_ALG.\n`,
    );
  }

  const handler = toNodeHandler(auth);
  server = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok\n");
      return;
    }
    handler(req, res).catch((e) => {
      process.stderr.write(`betterauth fixture: handler error: ${e?.stack ?? e}\n`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

  process.stdout.write(`READY http://127.0.0.1:${port}\n`);
}

main().catch((e) => fail("start-up failed", e));
