// A real OpenID Connect provider for the console's sign-in tests: npm's oidc-provider (panva, a
// certified OpenID provider library) with its own login form, run by scripts/identitylab.py as
//     node scripts/oidc-provider.mjs CONFIG.json        (cwd: the folder where npm installed it)
// CONFIG.json: {issuer, port, clients, accounts: {name: {password, groups, email}}, jwks, cookie_keys,
// clock_offset_seconds?}. The development interactions are off: a password form is shown and checked;
// consent is granted for the clients listed (they are first-party). clock_offset_seconds moves this
// provider's clock (tests: ID tokens that are already expired when the console receives them).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (cfg.clock_offset_seconds) {
  const realNow = Date.now;
  Date.now = () => realNow() + cfg.clock_offset_seconds * 1000;
}
const { default: Provider } = await import(
  pathToFileURL(join(process.cwd(), 'node_modules', 'oidc-provider', 'lib', 'index.js')).href);

const accounts = cfg.accounts;
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  jwks: cfg.jwks,
  cookies: { keys: cfg.cookie_keys },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // the lab's own pages: nothing loaded from anywhere (the default ones load web fonts)
      logoutSource: async (ctx, form) => {
        ctx.type = 'html';
        ctx.body = `<!doctype html><html lang="en"><head><title>Sign out</title></head><body>
<h1>Sign out of the identity lab?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
</body></html>`;
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.type = 'html';
        ctx.body = '<!doctype html><html lang="en"><head><title>Signed out</title></head><body><h1>Signed out</h1></body></html>';
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><html lang="en"><head><title>Error</title></head><body><h1>Error</h1>
<p id="error">${Object.entries(out).map(([k, v]) => `${escape(k)}: ${escape(v)}`).join('<br>')}</p></body></html>`;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ...(cfg.id_token_ttl ? { ttl: { IdToken: cfg.id_token_ttl } } : {}),
  findAccount: async (ctx, id) => (accounts[id] ? {
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id, name: id, email: accounts[id].email,
                           groups: accounts[id].groups }),
  } : undefined),
});
provider.proxy = false;

function loginForm(res, uid, status, message) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.end(`<!doctype html><html lang="en"><head><title>Identity lab sign-in</title></head><body>
<h1>Identity lab</h1>${message ? `<p role="alert" id="error">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Name</label> <input id="login" name="login" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password">
<button type="submit">Sign in</button></form></body></html>`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; if (data.length > 65536) reject(new Error('too large')); });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, isLogin) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    if (!isLogin || req.method !== 'POST') return loginForm(res, uid, 200, '');
    const form = await readBody(req);
    const name = form.get('login') || '';
    const account = Object.hasOwn(accounts, name) ? accounts[name] : null;
    if (!account || account.password !== form.get('password')) {
      return loginForm(res, uid, 401, 'Wrong name or password.');
    }
    return provider.interactionFinished(req, res, { login: { accountId: name } },
                                        { mergeWithLastSubmission: false });
  }
  // consent: granted for the lab's own clients
  const accountId = details.session.accountId;
  const grant = details.grantId ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = new URL(req.url, cfg.issuer).pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return callback(req, res);
  try {
    await interaction(req, res, match[1], Boolean(match[2]));
  } catch (err) {
    res.statusCode = 400;
    res.end(`interaction failed: ${escape(err.message)}`);
  }
});
server.listen(cfg.port, '127.0.0.1', () => console.log(`oidc-provider listening on ${cfg.issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
