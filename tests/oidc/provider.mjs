// A real OpenID provider for the single sign-on tests: npm's oidc-provider
// (certified by the OpenID Foundation), with its development sign-in pages (any
// password; the login names an account below).
//
// Started by tests/common/oidc.rs in a directory where `npm install` put
// oidc-provider. It listens on a free port of HOST (argv[2]) at once and prints
// `issuer URL`; then it reads one line from its standard input, the JSON of
// {client_id, client_secret, redirect_uri, accounts: {login: {email, groups}}},
// and prints `ready` once it answers as that issuer. It exits when its standard
// input closes (the test is gone) or on SIGTERM.
import http from 'node:http';
import readline from 'node:readline';

import Provider from 'oidc-provider';

const host = process.argv[2] || '127.0.0.1';
const server = http.createServer((req, res) => {
  res.statusCode = 503;
  res.end('not ready\n');
});

server.listen(0, host, () => {
  const { port } = server.address();
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  console.log(`issuer ${issuer}`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.once('line', (line) => {
    const site = JSON.parse(line);
    const provider = new Provider(issuer, {
      clients: [{
        client_id: site.client_id,
        client_secret: site.client_secret,
        redirect_uris: [site.redirect_uri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }],
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        groups: ['groups'],
      },
      scopes: ['openid', 'email', 'groups'],
      pkce: { methods: ['S256'], required: () => true },
      cookies: { keys: ['rollout-sso-test-cookie-key'] },
      features: { devInteractions: { enabled: true } },
      async findAccount(ctx, id) {
        const account = site.accounts[id];
        if (!account) return undefined;
        return {
          accountId: id,
          async claims() {
            return { sub: id, email: account.email, email_verified: true, groups: account.groups };
          },
        };
      },
    });
    server.removeAllListeners('request');
    server.on('request', provider.callback());
    console.log('ready');
  });
  lines.on('close', () => process.exit(0));
});

process.on('SIGTERM', () => process.exit(0));
