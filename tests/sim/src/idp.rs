//! The simulated identity server (ERP.net paths under `/id`) and Domain API.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use erpnet_auth::{HttpRequest, HttpResponse, Method};
use sha2::{Digest, Sha256};
use url::Url;

/// How refresh tokens behave when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The same refresh token is returned (newer Duende default).
    Reuse,
    /// No `refresh_token` field in refresh responses (keep the old one).
    Omit,
    /// A new refresh token each time; the old one stops working.
    Rotate,
    /// As `Rotate`, and presenting a used one revokes the whole grant
    /// (oidc-provider and IdentityServer with one-time-use tokens).
    RotateWithReuseDetection,
}

/// What the server counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Token endpoint requests.
    pub token_requests: u32,
    /// Of which refreshes.
    pub refreshes: u32,
    /// Of which client-credentials requests.
    pub client_credentials: u32,
    /// Revocation requests.
    pub revocations: u32,
    /// Grants revoked because a used refresh token or code came back.
    pub reuse_revocations: u32,
    /// Domain API requests.
    pub api_requests: u32,
    /// Domain API requests that were refused 401.
    pub api_unauthorized: u32,
    /// Discovery document requests.
    pub discovery_requests: u32,
}

#[derive(Debug)]
struct Grant {
    scope: String,
    nonce: Option<String>,
    /// When the user authenticated, Unix seconds: every ID token of the grant names it.
    auth_time: u64,
    revoked: bool,
    refresh_token: String,
    used_refresh_tokens: HashSet<String>,
}

#[derive(Debug)]
struct Code {
    grant: usize,
    redirect_uri: String,
    challenge: Option<String>,
    used: bool,
}

/// The simulated server. Call [`authorize`](SimIdp::authorize) for the browser leg and
/// [`handle`](SimIdp::handle) for every HTTP request, with the server's own clock.
#[derive(Debug)]
pub struct SimIdp {
    /// The instance root, e.g. `https://demodb.my.erp.net`.
    pub root: String,
    /// The registered client.
    pub client_id: String,
    /// Its plain secret (`None`: public client).
    pub client_secret: Option<String>,
    /// Refresh-token behaviour.
    pub rotation: Rotation,
    /// Access-token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Whether to send `expires_in` at all.
    pub send_expires_in: bool,
    /// Access tokens expire on a whole second, as providers that keep `exp` as a NumericDate
    /// do (oidc-provider, IdentityServer): up to a second sooner than `expires_in` after the
    /// answer says.
    pub whole_second_expiry: bool,
    /// Counters.
    pub stats: SimStats,
    /// Answer every API call 401 (a token the API refuses whatever the server says).
    pub reject_all_api_calls: bool,
    /// Signs real ID tokens (ES256) and serves their key set; `None` sends placeholders.
    pub signer: Option<crate::Signer>,
    /// Keys served besides the signer's (an old key kept during a rotation).
    pub extra_keys: Vec<crate::Signer>,
    grants: Vec<Grant>,
    codes: HashMap<String, Code>,
    access_tokens: HashMap<String, (usize, u64)>,
    counter: u64,
}

impl SimIdp {
    /// A server at `root` for one client.
    pub fn new(root: &str, client_id: &str, client_secret: Option<&str>) -> Self {
        SimIdp {
            root: root.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.map(str::to_owned),
            rotation: Rotation::Rotate,
            access_ttl_secs: 3600,
            send_expires_in: true,
            whole_second_expiry: false,
            stats: SimStats::default(),
            reject_all_api_calls: false,
            signer: None,
            extra_keys: Vec::new(),
            grants: Vec::new(),
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            counter: 0,
        }
    }

    /// The issuer, `{root}/id`.
    pub fn issuer(&self) -> String {
        format!("{}/id", self.root)
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{:06}", self.counter)
    }

    /// The browser leg: the user signs in at the authorization URL; returns the URL (or,
    /// for `form_post`, the form body) the browser brings back to the redirect URI.
    pub fn authorize(&mut self, authorization_url: &str) -> Result<String, String> {
        self.authorize_at(0, authorization_url)
    }

    /// [`authorize`](Self::authorize) at server time `now` (Unix ms), which a signed
    /// front-channel ID token needs.
    pub fn authorize_at(&mut self, now: u64, authorization_url: &str) -> Result<String, String> {
        let url = Url::parse(authorization_url).map_err(|e| e.to_string())?;
        if url.path() != "/id/connect/authorize" {
            return Err(format!("wrong authorize path {}", url.path()));
        }
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let get = |k: &str| q.get(k).cloned().ok_or_else(|| format!("missing {k}"));
        if get("client_id")? != self.client_id {
            return Err("unknown client".into());
        }
        let redirect_uri = get("redirect_uri")?;
        let state = get("state")?;
        let response_type = get("response_type")?;
        let challenge = match (q.get("code_challenge"), q.get("code_challenge_method").map(String::as_str)) {
            (Some(c), Some("S256")) => Some(c.clone()),
            (Some(_), _) => return Err("only S256".into()),
            (None, _) => None,
        };
        self.grants.push(Grant {
            scope: get("scope")?,
            nonce: q.get("nonce").cloned(),
            auth_time: now / 1000,
            revoked: false,
            refresh_token: String::new(),
            used_refresh_tokens: HashSet::new(),
        });
        let code = self.fresh("code-");
        self.codes.insert(
            code.clone(),
            Code { grant: self.grants.len() - 1, redirect_uri: redirect_uri.clone(), challenge, used: false },
        );
        let mut params = url::form_urlencoded::Serializer::new(String::new());
        params.append_pair("code", &code);
        if response_type == "code id_token" {
            let grant = self.grants.len() - 1;
            let extra = serde_json::json!({"c_hash": crate::left_hash(&code), "s_hash": crate::left_hash(&state)});
            let token = self.id_token(now, grant, extra, true).unwrap_or_else(|| "front.channel.idtoken".to_owned());
            params.append_pair("id_token", &token);
        }
        params.append_pair("scope", &get("scope")?);
        params.append_pair("state", &state);
        params.append_pair("session_state", "sim-session");
        params.append_pair("iss", &self.issuer());
        let params = params.finish();
        Ok(match (response_type.as_str(), q.get("response_mode").map(String::as_str)) {
            (_, Some("form_post")) => params,
            ("code", _) | (_, Some("query")) => format!("{redirect_uri}?{params}"),
            _ => format!("{redirect_uri}#{params}"),
        })
    }

    /// When an access token issued at `now` (Unix ms) stops working.
    fn expiry(&self, now: u64) -> u64 {
        let issued = if self.whole_second_expiry { now / 1000 * 1000 } else { now };
        issued + self.access_ttl_secs * 1000
    }

    /// Whether `access_token` would be accepted at `now` (not expired, grant not revoked).
    pub fn accepts(&self, now: u64, access_token: &str) -> bool {
        self.access_tokens
            .get(access_token)
            .is_some_and(|(grant, expires_at)| now < *expires_at && self.grants.get(*grant).is_some_and(|g| !g.revoked))
            && !self.reject_all_api_calls
    }

    /// Revokes every grant, as a password change or logout does.
    pub fn revoke_all(&mut self) {
        for grant in &mut self.grants {
            grant.revoked = true;
        }
    }

    /// Forgets every access token issued so far (the API then answers 401), keeping grants.
    pub fn revoke_access_tokens(&mut self) {
        self.access_tokens.clear();
    }

    /// Answers one HTTP request at server time `now` (Unix ms).
    pub fn handle(&mut self, now: u64, req: &HttpRequest) -> HttpResponse {
        let Ok(url) = Url::parse(&req.url) else { return json(400, r#"{"error":"invalid_request"}"#) };
        let origin_ok = url.origin() == Url::parse(&self.root).map(|u| u.origin()).unwrap_or(url.origin());
        if !origin_ok {
            return HttpResponse::new(502, "foreign origin");
        }
        match (req.method.clone(), url.path()) {
            (Method::Get, "/id/.well-known/openid-configuration") => {
                self.stats.discovery_requests += 1;
                let id = self.issuer();
                json(
                    200,
                    &serde_json::json!({
                        "issuer": id,
                        "authorization_endpoint": format!("{id}/connect/authorize"),
                        "token_endpoint": format!("{id}/connect/token"),
                        "end_session_endpoint": format!("{id}/connect/endsession"),
                        "revocation_endpoint": format!("{id}/connect/revocation"),
                        "userinfo_endpoint": format!("{id}/connect/userinfo"),
                        "jwks_uri": format!("{id}/.well-known/openid-configuration/jwks"),
                        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                        "code_challenge_methods_supported": ["plain", "S256"],
                        "authorization_response_iss_parameter_supported": true,
                    })
                    .to_string(),
                )
            }
            (Method::Get, "/id/.well-known/openid-configuration/jwks") => {
                let keys: Vec<serde_json::Value> =
                    self.signer.iter().chain(self.extra_keys.iter()).map(crate::Signer::jwk).collect();
                json(200, &serde_json::json!({ "keys": keys }).to_string())
            }
            (Method::Post, "/id/connect/token") => self.token(now, req),
            (Method::Post, "/id/connect/revocation") => {
                self.stats.revocations += 1;
                let form = form(req);
                if let Some(token) = form.get("token") {
                    for grant in &mut self.grants {
                        if &grant.refresh_token == token {
                            grant.revoked = true;
                        }
                    }
                }
                HttpResponse::new(200, "")
            }
            (_, path) if path.starts_with("/api/domain/odata/") => self.api(now, req, path),
            _ => HttpResponse::new(404, "<html><body>Not found</body></html>"),
        }
    }

    fn client_ok(&self, req: &HttpRequest, form: &HashMap<String, String>) -> bool {
        let basic = req.header("authorization").and_then(|h| h.strip_prefix("Basic ")).and_then(|b| {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (id, secret) = text.split_once(':')?;
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((decode(id)?, decode(secret)?))
        });
        let (id, secret) = match basic {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
        };
        id.as_deref() == Some(self.client_id.as_str()) && secret == self.client_secret
    }

    fn token(&mut self, now: u64, req: &HttpRequest) -> HttpResponse {
        self.stats.token_requests += 1;
        let form = form(req);
        if req.header("content-type") != Some("application/x-www-form-urlencoded") {
            return oauth_error("invalid_request");
        }
        if !self.client_ok(req, &form) {
            return oauth_error("invalid_client");
        }
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let Some(code) = form.get("code").and_then(|c| self.codes.get_mut(c)) else {
                    return oauth_error("invalid_grant");
                };
                let grant = code.grant;
                if code.used {
                    self.grants[grant].revoked = true;
                    self.stats.reuse_revocations += 1;
                    return oauth_error("invalid_grant");
                }
                code.used = true;
                if form.get("redirect_uri") != Some(&code.redirect_uri) {
                    return oauth_error("invalid_grant");
                }
                match (&code.challenge, form.get("code_verifier")) {
                    (Some(challenge), Some(verifier)) => {
                        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(Sha256::digest(verifier.as_bytes()));
                        if &computed != challenge {
                            return oauth_error("invalid_grant");
                        }
                    }
                    (None, None) => {}
                    _ => return oauth_error("invalid_grant"),
                }
                self.issue(now, grant, true)
            }
            Some("refresh_token") => {
                self.stats.refreshes += 1;
                let Some(presented) = form.get("refresh_token") else { return oauth_error("invalid_request") };
                let found = self
                    .grants
                    .iter()
                    .position(|g| &g.refresh_token == presented || g.used_refresh_tokens.contains(presented));
                let Some(index) = found else { return oauth_error("invalid_grant") };
                let rotation = self.rotation;
                let grant = &mut self.grants[index];
                if grant.revoked {
                    return oauth_error("invalid_grant");
                }
                if grant.used_refresh_tokens.contains(presented) {
                    if rotation == Rotation::RotateWithReuseDetection {
                        grant.revoked = true;
                        self.stats.reuse_revocations += 1;
                    }
                    return oauth_error("invalid_grant");
                }
                self.issue(now, index, false)
            }
            Some("client_credentials") => {
                self.stats.client_credentials += 1;
                self.grants.push(Grant {
                    scope: form.get("scope").cloned().unwrap_or_default(),
                    nonce: None,
                    auth_time: now / 1000,
                    revoked: false,
                    refresh_token: String::new(),
                    used_refresh_tokens: HashSet::new(),
                });
                let access = self.fresh("at-");
                let expires_at = self.expiry(now);
                self.access_tokens.insert(access.clone(), (self.grants.len() - 1, expires_at));
                json(200, &serde_json::json!({"access_token": access, "token_type": "Bearer", "expires_in": self.access_ttl_secs}).to_string())
            }
            _ => oauth_error("unsupported_grant_type"),
        }
    }

    fn issue(&mut self, now: u64, grant: usize, first: bool) -> HttpResponse {
        let access = self.fresh("at-");
        let expires_at = self.expiry(now);
        self.access_tokens.insert(access.clone(), (grant, expires_at));
        let rotation = self.rotation;
        let refresh = match (first, rotation) {
            (true, _) | (false, Rotation::Rotate | Rotation::RotateWithReuseDetection) => Some(self.fresh("rt-")),
            (false, Rotation::Reuse) => Some(self.grants[grant].refresh_token.clone()),
            (false, Rotation::Omit) => None,
        };
        let g = &mut self.grants[grant];
        if let Some(new) = &refresh {
            if *new != g.refresh_token && !g.refresh_token.is_empty() {
                let old = std::mem::replace(&mut g.refresh_token, new.clone());
                g.used_refresh_tokens.insert(old);
            } else {
                g.refresh_token = new.clone();
            }
        }
        let scope = g.scope.clone();
        let mut body = serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "scope": scope,
        });
        let extra = serde_json::json!({"at_hash": crate::left_hash(&access)});
        body["id_token"] =
            serde_json::json!(self.id_token(now, grant, extra, first).unwrap_or_else(|| format!("id.token.{grant}")));
        if self.send_expires_in {
            body["expires_in"] = serde_json::json!(self.access_ttl_secs);
        }
        if let Some(refresh) = refresh {
            if scope.split(' ').any(|s| s == "offline_access") {
                body["refresh_token"] = serde_json::json!(refresh);
            }
        }
        json(200, &body.to_string())
    }

    /// A signed ID token for `grant` at server time `now`; the sign-in's carry its nonce.
    fn id_token(&self, now: u64, grant: usize, extra: serde_json::Value, sign_in: bool) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let secs = now / 1000;
        let auth_time = self.grants.get(grant).map_or(secs, |g| g.auth_time);
        let mut claims = serde_json::json!({
            "iss": self.issuer(), "sub": "admin", "aud": self.client_id, "iat": secs, "exp": secs + 300,
            "auth_time": auth_time, "name": "SPS",
        });
        if let (true, Some(nonce)) = (sign_in, self.grants.get(grant).and_then(|g| g.nonce.as_ref())) {
            claims["nonce"] = serde_json::json!(nonce);
        }
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        Some(signer.sign(&claims))
    }

    fn api(&mut self, now: u64, req: &HttpRequest, path: &str) -> HttpResponse {
        self.stats.api_requests += 1;
        let token = req.header("authorization").and_then(|h| h.strip_prefix("Bearer "));
        let valid = token
            .and_then(|t| self.access_tokens.get(t))
            .filter(|(grant, expires_at)| now < *expires_at && self.grants.get(*grant).is_some_and(|g| !g.revoked));
        let valid = valid.filter(|_| !self.reject_all_api_calls);
        let Some((grant, _)) = valid else {
            self.stats.api_unauthorized += 1;
            return HttpResponse::new(401, "").with_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
        };
        let scope = &self.grants[*grant].scope;
        if !scope.split(' ').any(|s| s == "read" || s == "DomainApi") {
            return json(403, r#"{"error":{"message":"insufficient scope"}}"#);
        }
        let entity = path.trim_start_matches("/api/domain/odata/");
        json(
            200,
            &serde_json::json!({
                "@odata.context": format!("{}/api/domain/odata/$metadata#{entity}", self.root),
                "value": [{"Id": "9da64839-a8d0-491d-aebb-4d18fa42b014", "Number": "C-0001"}],
            })
            .to_string(),
        )
    }
}

fn form(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.body.as_deref().unwrap_or_default()).into_owned().collect()
}

fn json(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status, body.as_bytes().to_vec()).with_header("Content-Type", "application/json")
}

fn oauth_error(code: &str) -> HttpResponse {
    json(400, &format!(r#"{{"error":"{code}"}}"#))
}
