// The local stack's OpenID Connect provider: panva's oidc-provider (certified OpenID Provider library),
// standing in for Pro Santé Connect / the region's IdP. Local demo and tests only: in-memory sessions and
// grants (lost at restart), three synthetic, obviously fake users, one client.
//
// The client `proxymage-console` (confidential, client_secret_basic): authorization code only, PKCE S256
// required, the ID token carries `name` and the role claim (`proxymage_role`: 3c, medecin, lecture) so the
// gateway needs no userinfo call. RP-initiated logout is on (end_session_endpoint).
//
// Environment (deploy/local/oidc.sh sets it from local.env):
//   PROXYMAGE_LOCAL_OIDC_PORT           port on 127.0.0.1
//   PROXYMAGE_OIDC_ISSUER               the issuer URL (http://127.0.0.1:<port>)
//   PROXYMAGE_OIDC_CLIENT_ID / _SECRET  the gateway's client
//   PROXYMAGE_LOCAL_OIDC_REDIRECT_URIS  space-separated callback URLs of the local gateway(s); loopback ones
//                                       match on any port (RFC 8252 §7.3), which the tests' gateways need
//   PROXYMAGE_LOCAL_OIDC_POST_LOGOUT_URIS  space-separated pages the provider may send back to after logout
//   PROXYMAGE_LOCAL_OIDC_DATA_DIR       where the signing key and cookie keys are kept across restarts
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('PROXYMAGE_LOCAL_OIDC_PORT'));
const issuer = required('PROXYMAGE_OIDC_ISSUER');
const clientId = required('PROXYMAGE_OIDC_CLIENT_ID');
const clientSecret = required('PROXYMAGE_OIDC_CLIENT_SECRET');
const redirectUris = required('PROXYMAGE_LOCAL_OIDC_REDIRECT_URIS').split(/\s+/).filter(Boolean);
const postLogoutUris = (process.env.PROXYMAGE_LOCAL_OIDC_POST_LOGOUT_URIS || '').split(/\s+/).filter(Boolean);
const dataDir = required('PROXYMAGE_LOCAL_OIDC_DATA_DIR');

// Synthetic users, obviously fake (the demo prints their passwords): the role claim decides the gateway's rights.
const USERS = {
  '3c.fictif': { password: 'demo-3c', name: 'Claire FICTIVE (3C)', role: '3c' },
  'medecin.fictif': { password: 'demo-medecin', name: 'Dr Paul FICTIF', role: 'medecin' },
  'lecture.fictif': { password: 'demo-lecture', name: 'Léa LECTURE-FICTIVE', role: 'lecture' },
};

// The signing key (RS256) and the cookie keys, generated once: a restart keeps ID tokens verifiable.
function loadKeys() {
  const file = path.join(dataDir, 'keys.json');
  if (fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  const keys = { jwks: { keys: [jwk] }, cookies: [crypto.randomBytes(32).toString('base64url')] };
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, JSON.stringify(keys), { mode: 0o600 });
  return keys;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const allLoopback = [...redirectUris, ...postLogoutUris].every((uri) => {
  const url = new URL(uri);
  return url.protocol === 'http:' && LOOPBACK.has(url.hostname);
});

const keys = loadKeys();
const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      client_name: 'Proxymage (console locale)',
      // "native" makes loopback redirect URIs match on any port (RFC 8252 §7.3); any other URI: "web".
      application_type: allLoopback ? 'native' : 'web',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  pkce: { required: () => true }, // S256 only (oidc-provider refuses `plain`)
  jwks: keys.jwks,
  cookies: { keys: keys.cookies },
  scopes: ['openid', 'profile', 'proxymage'],
  claims: { openid: ['sub'], profile: ['name'], proxymage: ['proxymage_role'] },
  // The requested claims go into the ID token itself (the gateway reads them there, after validating it).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false }, // our own small login form below (it checks passwords)
    rpInitiatedLogout: {
      enabled: true,
      // The provider's confirmation, in French like the console (`form` posts to the provider).
      async logoutSource(ctx, form) {
        ctx.body = page(
          'Déconnexion',
          `<h1>Vous déconnecter du fournisseur d'identité local ?</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Me déconnecter</button>
<button type="submit" form="op.logoutForm">Rester connecté</button>`,
        );
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Déconnecté', '<h1>Vous êtes déconnecté.</h1>');
      },
    },
  },
  ttl: { Session: 12 * 3600, Interaction: 600, Grant: 12 * 3600, IdToken: 3600, AccessToken: 3600 },
  async findAccount(_ctx, accountId) {
    const user = USERS[accountId];
    if (!user) {
      return undefined;
    }
    return {
      accountId,
      async claims() {
        return { sub: accountId, name: user.name, proxymage_role: user.role };
      },
    };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
};

const provider = new Provider(issuer, configuration);

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>${escapeHtml(title)} — fournisseur d'identité local</title>
<style>body{font-family:sans-serif;max-width:28rem;margin:3rem auto}label{display:block;margin-top:1rem}
input{width:100%;padding:.4rem}button{margin:1.2rem .5rem 0 0;padding:.5rem 1rem}.erreur{color:#a00}</style></head>
<body>${body}</body></html>`;
}

function loginPage(uid, error, login) {
  return page(
    'Connexion',
    `<h1>Fournisseur d'identité local (fictif)</h1>
<p>Remplace Pro Santé Connect sur la pile locale. Comptes fictifs : 3c.fictif, medecin.fictif, lecture.fictif.</p>
${error ? `<p class="erreur" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="login">Identifiant</label><input id="login" name="login" value="${escapeHtml(login)}" required autofocus>
<label for="password">Mot de passe</label><input id="password" name="password" type="password" required>
<button type="submit">Se connecter</button></form>`,
  );
}

function send(res, status, body) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'X-Frame-Options': 'DENY',
    // No form-action: the login form's redirect chain ends at the gateway's callback (another origin).
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(body);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 8192) {
      break;
    }
  }
  return querystring.parse(body);
}

function samePassword(given, expected) {
  const a = crypto.createHash('sha256').update(String(given)).digest();
  const b = crypto.createHash('sha256').update(expected).digest();
  return crypto.timingSafeEqual(a, b);
}

async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!match) {
    send(res, 404, 'Introuvable');
    return;
  }
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== match[1]) {
    send(res, 400, 'Interaction inattendue');
    return;
  }
  if (details.prompt.name === 'consent') {
    // One first-party client: no consent screen, the grant covers what it asks for.
    const { missingOIDCScope = [], missingOIDCClaims = [] } = details.prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(missingOIDCScope.join(' '));
    grant.addOIDCClaims(missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  if (details.prompt.name !== 'login') {
    send(res, 400, 'Interaction inattendue');
    return;
  }
  if (req.method === 'GET' && !match[2]) {
    send(res, 200, loginPage(details.uid, '', details.params.login_hint || ''));
    return;
  }
  if (req.method === 'POST' && match[2]) {
    const form = await readForm(req);
    const login = String(form.login || '').trim();
    const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
    const ok = samePassword(form.password || '', user ? user.password : 'no-such-user');
    if (!user || !ok) {
      console.log(JSON.stringify({ event: 'login_refused' }));
      send(res, 200, loginPage(details.uid, 'Identifiant ou mot de passe incorrect.', login));
      return;
    }
    console.log(JSON.stringify({ event: 'login', account: login }));
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 405, 'Méthode non permise');
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      console.error(JSON.stringify({ event: 'interaction_failed', error: error.name, message: error.message }));
      if (!res.headersSent) {
        send(res, 400, 'Session de connexion expirée ou invalide : recommencez depuis la console.');
      }
    });
    return;
  }
  callback(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', issuer, port, clients: [clientId], redirect_uris: redirectUris }));
});

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
