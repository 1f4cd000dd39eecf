//! Single sign-on for the dashboard (`rollout serve --oidc FILE`): the OpenID
//! Connect authorization code flow with PKCE, `state` and `nonce`, through the
//! `openidconnect` crate (a certified-conformant client library: discovery, the
//! code exchange and the ID token's checks are its, not ours).
//!
//! [`Sso::begin`] sends a browser to the provider and remembers the sign-in under a
//! random id ([`pending`]); [`Sso::finish`] takes the provider's answer once, checks
//! its `state`, exchanges the code with the PKCE verifier, verifies the ID token
//! against the keys named by the provider's discovery document (signature, `iss`,
//! `aud`, `exp`, `nonce`), reads the person's name and groups from it (or, when it
//! lacks them, from the userinfo endpoint, for the same subject), and maps them to a
//! role ([`config`]). No role mapped, no principal: the caller opens no session.
//!
//! The discovery document and keys are fetched when first needed and kept an hour;
//! an ID token signed with a key they lack fetches them again (the provider rotated
//! its keys), at most once a minute. The controller starts while the provider is
//! down: token sign-in is the break-glass.

pub mod config;
pub mod pending;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::Principal;
pub use config::Config;

/// The discovery document and keys are fetched again after this.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A token signed with an unknown key fetches the keys again, at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// Each call to the provider gets this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Every claim, standard or not, kept as the provider sent it: the `--oidc` file
/// names which ones matter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl AdditionalClaims for Claims {}

type Token = StandardTokenResponse<
    IdTokenFields<
        Claims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type OidcClient = Client<
    Claims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Token,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in did not give a principal. Each says what to do; none holds a code,
/// a token or the client secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider could not be asked (discovery, the code exchange, userinfo).
    #[error("the identity provider {issuer} did not answer: {detail}; try again, or sign in with a token")]
    Unreachable { issuer: String, detail: String },
    /// The provider sent the browser back with an error (the person declined, say).
    #[error("the identity provider refused the sign-in: {0}")]
    Declined(String),
    /// No sign-in under way for this browser: never started here, started over ten
    /// minutes ago, already finished, or started on another controller.
    #[error(
        "this sign-in is not one this controller started for this browser (or it took over ten minutes, or was already used): sign in again"
    )]
    Unknown,
    /// The answer's `state` is not the one sent: another site's answer.
    #[error("the provider's answer does not carry this sign-in's state: sign in again from the dashboard")]
    State,
    /// The ID token failed a check.
    #[error("the provider's ID token was refused: {0}")]
    IdToken(String),
    /// The token names nobody this controller can act for.
    #[error("{0}")]
    NoName(String),
    /// Signed in at the provider, but no role maps from the person's claim values.
    #[error(
        "{who} signed in at the provider, but none of their `{claim}` values ({values}) maps to a role here: an admin adds one under roles.map in the --oidc file"
    )]
    NoRole { who: String, claim: String, values: String },
}

/// The provider's answer, as the browser brings it back to the callback's query.
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The issuer (RFC 9207), when the provider says it.
    pub iss: Option<String>,
}

/// A sign-in sent to the provider.
pub struct Begun {
    /// Where the browser goes.
    pub url: url::Url,
    /// What the browser holds until it comes back (the cookie's value).
    pub id: String,
}

/// What is remembered of a sign-in under way.
struct Started {
    state: String,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
}

/// Single sign-on through one OpenID provider.
pub struct Sso {
    config: Config,
    redirect_url: url::Url,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(Instant, Arc<CoreProviderMetadata>)>>,
    pending: pending::Pending<Started>,
}

impl Sso {
    pub fn new(config: Config) -> Result<Sso, String> {
        let http = reqwest::Client::builder()
            // Following a redirect would let a provider's answer point us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the OIDC HTTP client: {e}"))?;
        let redirect_url = url::Url::parse(&config.redirect_url).map_err(|e| format!("redirect_url: {e}"))?;
        Ok(Sso {
            config,
            redirect_url,
            http,
            metadata: tokio::sync::Mutex::new(None),
            pending: pending::Pending::default(),
        })
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            issuer: self.config.issuer.to_string(),
            detail: crate::text::one_line(&detail.to_string()).into_owned(),
        }
    }

    /// The provider's discovery document and keys: kept, or fetched when older than
    /// `max_age`.
    async fn metadata(&self, max_age: Duration) -> Result<Arc<CoreProviderMetadata>, Error> {
        let mut kept = self.metadata.lock().await;
        if let Some((at, m)) = kept.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| self.unreachable(e))?;
        let fetched = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| self.unreachable(chain(&e)))?;
        info!(issuer = %self.config.issuer, "read the identity provider's discovery document and keys");
        let fetched = Arc::new(fetched);
        *kept = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }

    /// Fetches the discovery document now, so the first sign-in does not wait (a
    /// failure is only logged: the provider may be down while the controller starts).
    pub async fn warm(&self) {
        if let Err(e) = self.metadata(METADATA_TTL).await {
            warn!(error = %e, "single sign-on is not ready yet; it tries again at the first sign-in");
        }
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> OidcClient {
        let basic = metadata
            .token_endpoint_auth_methods_supported()
            .is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
        Client::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.0.clone())),
        )
        .set_redirect_uri(RedirectUrl::from_url(self.redirect_url.clone()))
        .set_auth_type(if basic {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        })
    }

    /// The scopes asked for besides `openid`: the file's, or those of `email`,
    /// `profile` and the claims' names that the provider lists.
    fn scopes(&self, metadata: &CoreProviderMetadata) -> Vec<String> {
        if let Some(scopes) = &self.config.scopes {
            return scopes.iter().filter(|s| *s != "openid").cloned().collect();
        }
        let supported: Vec<&str> = metadata
            .scopes_supported()
            .map(|s| s.iter().map(|s| s.as_str()).collect())
            .unwrap_or_default();
        let wanted = [
            "email",
            "profile",
            self.config.principal_claim.as_str(),
            self.config.roles_claim.as_str(),
        ];
        let mut scopes: Vec<String> = Vec::new();
        for w in wanted {
            if w != "openid" && supported.contains(&w) && !scopes.iter().any(|s| s == w) {
                scopes.push(w.to_string());
            }
        }
        scopes
    }

    /// Starts a sign-in: where to send the browser, and the id it keeps.
    pub async fn begin(&self) -> Result<Begun, Error> {
        let metadata = self.metadata(METADATA_TTL).await?;
        let client = self.client(&metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes(&metadata) {
            request = request.add_scope(Scope::new(scope));
        }
        let (url, state, nonce) = request.url();
        let started = Started {
            state: state.secret().clone(),
            nonce,
            verifier,
        };
        let (id, pushed_out) = self.pending.insert(started, Instant::now());
        if pushed_out {
            warn!(
                kept = pending::MAX,
                "single sign-on: {} sign-ins under way at once; the oldest must start again",
                pending::MAX
            );
        }
        Ok(Begun { url, id })
    }

    /// Finishes the sign-in the browser's `id` names with the provider's answer:
    /// the principal it signs in, or why not.
    pub async fn finish(&self, id: &str, answer: &Answer) -> Result<Principal, Error> {
        let started = self.pending.take(id, Instant::now()).ok_or(Error::Unknown)?;
        if let Some(error) = &answer.error {
            let text = match &answer.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            };
            return Err(Error::Declined(crate::ident::escaped(&text)));
        }
        let state = answer.state.as_deref().unwrap_or_default();
        if !bool::from(started.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(Error::State);
        }
        let code = answer
            .code
            .as_deref()
            .ok_or(Error::Declined("the answer holds no code".into()))?;
        let metadata = self.metadata(METADATA_TTL).await?;
        // RFC 9207: an answer that names its issuer must name ours (a mix-up attack
        // sends another provider's code here).
        if let Some(iss) = &answer.iss
            && iss != metadata.issuer().as_str()
        {
            return Err(Error::IdToken(format!(
                "the answer comes from issuer `{}`, not {}",
                crate::ident::escaped(iss),
                self.config.issuer
            )));
        }
        let client = self.client(&metadata);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| self.unreachable(e))?
            .set_pkce_verifier(started.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // It answered, and said no (a used, expired or forged code).
                RequestTokenError::ServerResponse(said) => Error::Declined(crate::ident::escaped(&said.to_string())),
                other => self.unreachable(chain(&other)),
            })?;
        let mut claims = self.verified_claims(&token, &started.nonce, &metadata).await?;
        if !self.config.complete(&claims) {
            self.add_userinfo(&client, &token, &mut claims).await?;
        }
        self.principal(&claims)
    }

    /// The ID token's claims, once its signature, issuer, audience, expiry and nonce
    /// hold; an unknown signing key fetches the provider's keys again first.
    async fn verified_claims(
        &self,
        token: &Token,
        nonce: &Nonce,
        metadata: &Arc<CoreProviderMetadata>,
    ) -> Result<Map<String, Value>, Error> {
        let id_token = token.id_token().ok_or_else(|| {
            Error::IdToken("the token response holds no ID token (is `openid` a scope of this client?)".into())
        })?;
        let checked = |metadata: &CoreProviderMetadata| {
            let client = self.client(metadata);
            id_token
                .claims(&client.id_token_verifier(), nonce)
                .map_err(|e| {
                    (
                        matches!(
                            e,
                            ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)
                        ),
                        chain(&e),
                    )
                })
                .and_then(|c| serde_json::to_value(c).map_err(|e| (false, e.to_string())))
        };
        let value = match checked(metadata) {
            Ok(v) => v,
            Err((true, _)) => {
                let fresh = self.metadata(REFETCH_AFTER).await?;
                checked(&fresh).map_err(|(_, e)| Error::IdToken(e))?
            }
            Err((false, e)) => return Err(Error::IdToken(e)),
        };
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(Error::IdToken("its claims are not an object".into())),
        }
    }

    /// Adds the claims the ID token lacked from the userinfo endpoint (asked with
    /// the access token; its answer must name the same subject).
    async fn add_userinfo(
        &self,
        client: &OidcClient,
        token: &Token,
        claims: &mut Map<String, Value>,
    ) -> Result<(), Error> {
        let Some(subject) = claims.get("sub").and_then(Value::as_str) else {
            return Ok(());
        };
        let Ok(request) = client.user_info(
            token.access_token().clone(),
            Some(openidconnect::SubjectIdentifier::new(subject.to_string())),
        ) else {
            return Ok(()); // no userinfo endpoint: the ID token is all there is
        };
        let info: UserInfoClaims<Claims, CoreGenderClaim> = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.unreachable(chain(&e)))?;
        if let Ok(Value::Object(more)) = serde_json::to_value(&info) {
            for (k, v) in more {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(())
    }

    /// The principal `claims` name, with the highest role their values map to.
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Error> {
        let name = self.config.principal(claims).map_err(Error::NoName)?;
        match self.config.role(claims) {
            (Some(role), _) => Ok(Principal::new(name, role)),
            (None, values) => Err(Error::NoRole {
                who: name,
                claim: self.config.roles_claim.clone(),
                values: if values.is_empty() {
                    "none".into()
                } else {
                    values
                        .iter()
                        .map(|v| crate::ident::escaped(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }
}

/// An error and its causes, on one line (the crate's errors say little at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::text::one_line(&text).into_owned()
}
