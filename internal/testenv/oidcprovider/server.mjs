// The second real authorization server of the tests: oidc-provider (package.json pins the
// version), configured for token-rotator's suites. internal/testenv/oidcprovider.go installs it
// into a per-machine cache and starts it; nothing here is for production.
//
// It binds 127.0.0.1 on port 0 (or OIDCP_PORT), prints "listening on http://127.0.0.1:PORT" once
// it answers, and exits when its parent (OIDCP_PARENT_PID) is gone. OIDCP_CONFIG is JSON:
//   {"ttl": {"AccessToken": 120, "ClientCredentials": 120, "RefreshToken": 600},
//    "scopes": ["public.contact:read", ...]}
//
// Besides the provider's own routes it answers test-only routes under /test/, which the
// provider has none under:
//   GET  /test/health   200 once the provider is mounted
//   POST /test/clients  JSON {redirect_uri, scopes, token_endpoint_auth_method} -> {client_id, client_secret}
//   GET  /test/stats    {"requests": [{"grant_type", "status", "auth"}, ...]}: every POST /token seen but
//                       the harness's own, which carry an X-Test-Harness header
// and a confidential client "test-operator" (secret in OIDCP_OPERATOR_SECRET) that may introspect
// and revoke any token, as an operator's tooling would.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.OIDCP_CONFIG || '{}');
const ttl = { AccessToken: 120, ClientCredentials: 120, RefreshToken: 600, ...(cfg.ttl || {}) };
const scopes = cfg.scopes || [];
const operatorSecret = process.env.OIDCP_OPERATOR_SECRET || crypto.randomBytes(24).toString('base64url');
const OPERATOR = 'test-operator';

// A store in this process's memory, so /test/clients can register clients the provider then
// finds like any other. Every model's records expire with their TTL.
const store = new Map();
class MemoryAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expires: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
    if (payload.grantId) {
      const g = `grant:${payload.grantId}`;
      store.set(g, [...(store.get(g) || []), this.key(id)]);
    }
    if (payload.uid) store.set(`uid:${payload.uid}`, id);
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id);
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || (e.expires && e.expires < Date.now())) return undefined;
    return e.payload;
  }
  async findByUid(uid) { const id = store.get(`uid:${uid}`); return id && this.find(id); }
  async findByUserCode(c) { const id = store.get(`userCode:${c}`); return id && this.find(id); }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const k of store.get(`grant:${grantId}`) || []) store.delete(k);
    store.delete(`grant:${grantId}`);
  }
}

const requests = [];

const server = http.createServer();
server.listen(Number(process.env.OIDCP_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: [{
      client_id: OPERATOR,
      client_secret: operatorSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    }],
    scopes: ['openid', 'offline_access', ...scopes],
    ttl: {
      ...ttl,
      AuthorizationCode: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 86400,
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: (ctx, client, token) => client.clientId === OPERATOR || token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: (ctx, client, token) => client.clientId === OPERATOR || token.clientId === client.clientId,
      },
    },
    // Refresh tokens for every client allowed the refresh_token grant, without the OpenID
    // offline_access scope and its consent; each one is single-use.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    // PKCE: required for public clients (the default); used whenever a code_challenge is sent.
    pkce: { required: (ctx, client) => client.clientAuthMethod === 'none' },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  // Count every request at the token endpoint, with its grant type and the status answered.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token' && !ctx.get('x-test-harness')) {
      // how the client authenticated: an Authorization header, a secret in the body, or neither
      const auth = ctx.get('authorization') ? 'basic' : ctx.oidc?.body?.client_secret ? 'post' : 'none';
      requests.push({ grant_type: ctx.oidc?.params?.grant_type ?? '', status: ctx.status, auth });
    }
  });

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (!url.pathname.startsWith('/test/')) {
      callback(req, res);
      return;
    }
    testRoute(req, res, url.pathname).catch((err) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(err && err.stack || err));
    });
  });
  console.log(`listening on ${issuer}`);
});

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readJSON(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return data ? JSON.parse(data) : {};
}

async function testRoute(req, res, path) {
  if (req.method === 'GET' && path === '/test/health') return json(res, 200, { ok: true });
  if (req.method === 'GET' && path === '/test/stats') return json(res, 200, { requests });
  if (req.method === 'POST' && path === '/test/clients') {
    const b = await readJSON(req);
    const method = b.token_endpoint_auth_method || 'client_secret_post';
    const client = {
      client_id: `client-${crypto.randomBytes(8).toString('hex')}`,
      token_endpoint_auth_method: method,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [b.redirect_uri || 'http://localhost:8765/callback'],
    };
    if (method === 'none') {
      client.grant_types = ['authorization_code', 'refresh_token'];
    } else {
      client.client_secret = crypto.randomBytes(24).toString('base64url');
    }
    if (b.client_id) client.client_id = b.client_id;
    if (b.client_secret && method !== 'none') client.client_secret = b.client_secret;
    if (b.scopes) client.scope = b.scopes;
    await new MemoryAdapter('Client').upsert(client.client_id, client);
    return json(res, 200, { client_id: client.client_id, client_secret: client.client_secret || '' });
  }
  return json(res, 404, { error: 'not_found' });
}

// Exit with the test process that started this one, even when it was killed.
const parent = Number(process.env.OIDCP_PARENT_PID || 0);
if (parent) {
  setInterval(() => {
    try { process.kill(parent, 0); } catch { process.exit(0); }
  }, 1000).unref();
}
