//! The durable state of a session, versioned, as JSON.
//!
//! Holds only what must survive a restart or a page reload: tokens with absolute expiry,
//! the granted scope, the pending sign-in and the provider metadata. In-flight requests,
//! waiting calls and timers are deliberately absent.

use serde::{Deserialize, Serialize};

pub use crate::authorize::PendingAuthorization;
use crate::discovery::ProviderMetadata;
use crate::json::{Object, Wrong};
use crate::jwks::JwkSet;
use crate::secret::{AccessToken, IdToken, RefreshToken};
use crate::shared::Shared;
use crate::sites::InstanceSites;
use crate::token::is_token_text;
use crate::usage::UsageError;

/// The snapshot format this version writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Tokens as persisted: expiry is absolute, so it survives the time spent on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoredTokens {
    /// The access token.
    pub(crate) access_token: AccessToken,
    /// When it was received, Unix ms.
    pub(crate) received_at: u64,
    /// When it expires, Unix ms; `None` when the server did not say.
    pub(crate) expires_at: Option<u64>,
    /// The refresh token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<RefreshToken>,
    /// The granted scope, as the server reported it (the one asked for when it named none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
}

/// A session's durable state. Persist it whenever the session emits
/// [`Output::Persist`](crate::Output::Persist).
///
/// Opaque on purpose: JSON in ([`from_json`](Self::from_json)), JSON out
/// ([`to_json`](Self::to_json)), and a few getters. The stored format is versioned as a
/// whole ([`SNAPSHOT_VERSION`]), not bound field by field to this crate's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Always [`SNAPSHOT_VERSION`] when written by this version.
    pub(crate) version: u32,
    /// The issuer the session was configured for.
    pub(crate) issuer: String,
    /// The client the session was configured for.
    pub(crate) client_id: String,
    /// Cached provider metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Shared<ProviderMetadata>>,
    /// A sign-in awaiting its callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<PendingAuthorization>,
    /// Bumped at every change of the tokens: a store compares it (compare-and-swap), and a
    /// session never adopts a snapshot older than its own state.
    #[serde(default)]
    pub(crate) generation: u64,
    /// The stored generation this state was derived from (not serialized: it describes a
    /// write, not the state).
    #[serde(skip)]
    pub(crate) base_generation: u64,
    /// The ERP.net instance's sites, discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sites: Option<Shared<InstanceSites>>,
    /// The current tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens: Option<StoredTokens>,
    /// The last ID token, kept for the logout's `id_token_hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id_token: Option<IdToken>,
    /// The provider's signing keys, cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jwks: Option<Shared<JwkSet>>,
}

/// What [`Snapshot::to_json`] writes fresh at every persist: all but the provider's
/// documents, in the order and form the derived `Serialize` of [`Snapshot`] gives them.
#[derive(Serialize)]
struct UserState<'a> {
    version: u32,
    issuer: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<&'a PendingAuthorization>,
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a StoredTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a IdToken>,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Written by another version of this library.
    #[error("snapshot version {found} is not supported (this library reads version {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// Not JSON, or JSON of the wrong shape; the position only, never the content.
    #[error("the snapshot is corrupted (at line {line}, column {column})")]
    Corrupt {
        /// Line of the first problem.
        line: usize,
        /// Column of the first problem.
        column: usize,
    },
    /// Values that cannot be true (such as expiry before receipt).
    #[error("the snapshot is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// Made for another client or provider.
    #[error("the snapshot belongs to another client or issuer")]
    OtherClient,
    /// The host broke the loop contract (e.g. handed a snapshot in before draining).
    #[error(transparent)]
    Usage(#[from] UsageError),
}

impl SnapshotError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::UnsupportedVersion { .. } => "snapshot_version",
            SnapshotError::Corrupt { .. } => "snapshot_corrupt",
            SnapshotError::Inconsistent(_) => "snapshot_inconsistent",
            SnapshotError::OtherClient => "snapshot_other_client",
            SnapshotError::Usage(e) => e.code(),
        }
    }
}

impl StoredTokens {
    fn from_object(mut t: Object) -> Result<StoredTokens, Wrong> {
        Ok(StoredTokens {
            access_token: AccessToken::new(t.required_string("access_token")?),
            received_at: t.required_u64("received_at")?,
            expires_at: t.u64("expires_at")?,
            refresh_token: t.string("refresh_token")?.map(RefreshToken::new),
            scope: t.string("scope")?,
        })
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// When it was received, Unix ms.
    pub fn received_at(&self) -> u64 {
        self.received_at
    }

    /// When it expires, Unix ms; `None` when the server did not say.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The granted scope, as the server reported it (the one asked for when it named none).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

impl<'de> Deserialize<'de> for StoredTokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(StoredTokens::from_object)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(Snapshot::from_object)
    }
}

impl Snapshot {
    fn from_object(mut s: Object) -> Result<Snapshot, Wrong> {
        let version = s.required_u64("version")?;
        Ok(Snapshot {
            version: u32::try_from(version).map_err(|_| Wrong("version"))?,
            issuer: s.required_string("issuer")?,
            client_id: s.required_string("client_id")?,
            metadata: s.object("metadata")?.map(ProviderMetadata::from_object).transpose()?.map(Shared::new),
            pending: s.object("pending")?.map(PendingAuthorization::from_object).transpose()?,
            generation: s.u64("generation")?.unwrap_or(0),
            base_generation: 0,
            sites: s.object("sites")?.map(InstanceSites::from_object).transpose()?.map(Shared::new),
            tokens: s.object("tokens")?.map(StoredTokens::from_object).transpose()?,
            id_token: s.string("id_token")?.map(IdToken::new),
            jwks: s.object("jwks")?.map(JwkSet::from_object).transpose()?.map(Shared::new),
        })
    }

    /// The generation of its token state: higher is newer. A shared store can refuse a write
    /// whose generation is not above the stored one's (compare-and-swap).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The stored generation this snapshot was derived from: the one the session last wrote
    /// or adopted. A shared store writes it only while the stored generation is **not above**
    /// this (compare-and-swap). A refused write means another process changed the tokens
    /// meanwhile: read the stored snapshot and hand it to
    /// [`Session::handle_snapshot`](crate::Session::handle_snapshot), which adopts the
    /// newer tokens. Equal to [`generation`](Self::generation) when the tokens did not change
    /// (a pending sign-in, provider metadata); one below it after this session renewed.
    pub fn base_generation(&self) -> u64 {
        self.base_generation
    }

    /// The format version it was written in.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The issuer the session was configured for.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client the session was configured for.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The tokens, when signed in.
    pub fn tokens(&self) -> Option<&StoredTokens> {
        self.tokens.as_ref()
    }

    /// The sign-in awaiting its callback, if any.
    pub fn pending(&self) -> Option<&PendingAuthorization> {
        self.pending.as_ref()
    }

    /// The cached provider metadata, if any.
    pub fn metadata(&self) -> Option<&ProviderMetadata> {
        self.metadata.as_deref()
    }

    /// The last ID token (for the logout's `id_token_hint`), if any.
    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_ref()
    }

    /// Whether the provider's signing keys are cached.
    pub fn has_signing_keys(&self) -> bool {
        self.jwks.is_some()
    }

    /// The JSON text to store.
    pub fn to_json(&self) -> String {
        // The user's state is written fresh; the provider's documents were written once
        // (`Shared`) and are appended as they were. Serializing these plain structs cannot
        // fail; an empty string would be refused on restore rather than silently accepted.
        let user = UserState {
            version: self.version,
            issuer: &self.issuer,
            client_id: &self.client_id,
            pending: self.pending.as_ref(),
            generation: self.generation,
            tokens: self.tokens.as_ref(),
            id_token: self.id_token.as_ref(),
        };
        let Ok(mut json) = serde_json::to_string(&user) else { return String::new() };
        let documents = [
            ("metadata", self.metadata.as_ref().map(Shared::json)),
            ("sites", self.sites.as_ref().map(Shared::json)),
            ("jwks", self.jwks.as_ref().map(Shared::json)),
        ];
        // An object with `version` first: its closing brace is its last byte.
        if json.pop() != Some('}') {
            return String::new();
        }
        for (name, document) in documents {
            match document {
                Some(Some(document)) => {
                    json.push_str(",\"");
                    json.push_str(name);
                    json.push_str("\":");
                    json.push_str(document);
                }
                Some(None) => return String::new(),
                None => {}
            }
        }
        json.push('}');
        json
    }

    /// Reads a stored snapshot, refusing unknown versions and corruption.
    pub fn from_json(text: &str) -> Result<Snapshot, SnapshotError> {
        let corrupt = |e: serde_json::Error| SnapshotError::Corrupt { line: e.line(), column: e.column() };
        let object = Object::parse(text.as_bytes()).map_err(corrupt)?;
        // The version is read first, alone, so that a future format is reported as such
        // rather than as corruption.
        match object.peek_u64("version") {
            Some(v) if v == u64::from(SNAPSHOT_VERSION) => {}
            Some(found) => return Err(SnapshotError::UnsupportedVersion { found }),
            None => return Err(SnapshotError::Corrupt { line: 1, column: 1 }),
        }
        // A member of the wrong shape: where serde_json notices it (the end of the object).
        let mut snapshot = Snapshot::from_object(object).map_err(|_| {
            serde_json::from_slice::<Snapshot>(text.as_bytes())
                .err()
                .map_or(SnapshotError::Corrupt { line: 1, column: 1 }, corrupt)
        })?;
        snapshot.check()?;
        // What was read is its own base: written back unchanged, it replaces itself.
        snapshot.base_generation = snapshot.generation;
        Ok(snapshot)
    }

    fn check(&self) -> Result<(), SnapshotError> {
        if let Some(tokens) = &self.tokens {
            if tokens.expires_at.is_some_and(|e| e <= tokens.received_at) {
                return Err(SnapshotError::Inconsistent("tokens expire before they were received"));
            }
            if tokens.access_token.secret().is_empty() {
                return Err(SnapshotError::Inconsistent("empty access token"));
            }
            // A stored token is trusted no more than one from a server: a CR LF in it would
            // inject a header into every API request.
            let refresh_ok = tokens.refresh_token.as_ref().is_none_or(|r| is_token_text(r.secret(), true));
            if !is_token_text(tokens.access_token.secret(), false) || !refresh_ok {
                return Err(SnapshotError::Inconsistent("a token with characters tokens cannot have"));
            }
        }
        if let Some(metadata) = &self.metadata {
            metadata.validate().map_err(|_| SnapshotError::Inconsistent("unusable provider endpoint"))?;
            if metadata.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
                return Err(SnapshotError::Inconsistent("metadata of another issuer"));
            }
        }
        Ok(())
    }
}
