//! URLs as the WHATWG URL Standard parses them, by one of two parsers chosen at build time:
//! the `url` crate (feature `rust-urls`, on by default) or, in WebAssembly, the host's own
//! `URL` (feature `host-urls`). Both run the same algorithm; the host's has full IDNA and
//! costs the wasm none of its bytes. Parsing is a pure function of its input, so asking the
//! host for it reads no clock, environment or state. When both features are on, `url` wins.
//!
//! The session only ever needs what this module offers: parse, join, the parts, the origin,
//! a directory path and appended query pairs (form-encoded by `form_urlencoded`).

#[cfg(not(any(feature = "rust-urls", all(feature = "host-urls", target_arch = "wasm32"))))]
compile_error!("erpnet-auth needs a URL parser: the `rust-urls` feature (or `host-urls` in WebAssembly)");

/// Why a string is not an absolute URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlError {
    /// It would be one below a base.
    Relative,
    /// It names no host where its scheme needs one (told apart by `rust-urls` only).
    #[cfg_attr(not(feature = "rust-urls"), expect(dead_code, reason = "the host's URL does not say why"))]
    NoHost,
    Invalid,
}

/// Where a URL lives: scheme, host and port. Opaque origins (`null`) equal nothing.
#[derive(Clone, Debug)]
pub(crate) struct WebOrigin(Option<String>);

impl PartialEq for WebOrigin {
    fn eq(&self, other: &Self) -> bool {
        matches!((&self.0, &other.0), (Some(a), Some(b)) if a == b)
    }
}

impl WebOrigin {
    /// `scheme://host[:port]`, or `null`.
    pub(crate) fn serialization(&self) -> &str {
        self.0.as_deref().unwrap_or("null")
    }
}

/// A call's URL: all the call path needs, its serialization and its origin (read from the
/// host in as few crossings as there can be).
pub(crate) struct CallUrl {
    pub href: String,
    pub origin: WebOrigin,
}

/// A URL's serialization as the parser writes it (scheme and host lowercased, the default
/// port left out, the path resolved): all a callback needs, in one parse and one read.
pub(crate) struct Href(String);

impl Href {
    pub(crate) fn parse(raw: &str) -> Result<Href, UrlError> {
        WebUrl::parse_href(raw).map(Href)
    }

    /// Scheme, authority and path: equal exactly when each of them is.
    pub(crate) fn location(&self) -> &str {
        self.0.split(['?', '#']).next().unwrap_or_default()
    }

    pub(crate) fn query(&self) -> Option<&str> {
        query_of(&self.0)
    }

    pub(crate) fn fragment(&self) -> Option<&str> {
        fragment_of(&self.0)
    }
}

/// Read from a serialization: before the fragment, a `?` can only open the query (the
/// parser percent-encodes one anywhere else), and the first `#` opens the fragment. This
/// tells "no query" from an empty one, which `URL.search` does not.
fn query_of(href: &str) -> Option<&str> {
    let before_fragment = href.split_once('#').map_or(href, |(head, _)| head);
    before_fragment.split_once('?').map(|(_, query)| query)
}

fn fragment_of(href: &str) -> Option<&str> {
    href.split_once('#').map(|(_, fragment)| fragment)
}

/// Whether `raw` is a relative reference (it needs a base).
pub(crate) fn is_relative(raw: &str) -> bool {
    matches!(WebUrl::parse(raw), Err(UrlError::Relative))
}

/// A call's URL: `raw` when it is absolute on its own, else `raw` below `base`. So
/// `https:evil.example/x` is evil.example's, as it reads, not a path below a same-scheme base.
pub(crate) fn resolve_call(raw: &str, base: Option<&WebUrl>) -> Result<CallUrl, UrlError> {
    // Without a `:` there is no scheme, so no absolute URL: one parse, below the base (the
    // usual call, `Entity?$top=1`).
    let alone = if raw.contains(':') { WebUrl::parse_call(raw) } else { Err(UrlError::Relative) };
    match (alone, base) {
        (Err(UrlError::Relative), Some(base)) => base.join_call(raw),
        (Err(UrlError::Relative), None) => Err(UrlError::Invalid),
        (alone, _) => alone,
    }
}

/// Parts every backend reads the same way from a parsed URL.
impl WebUrl {
    /// The same URL with its path ending in `/`, so that relative paths join below it.
    pub(crate) fn into_directory(self) -> Result<WebUrl, UrlError> {
        if self.path().ends_with('/') {
            return Ok(self);
        }
        let path = format!("{}/", self.path());
        self.with_path(&path)
    }
}

#[cfg(feature = "rust-urls")]
mod backend {
    use super::{CallUrl, UrlError, WebOrigin};
    use url::Url;

    #[derive(Clone, Debug)]
    pub(crate) struct WebUrl(Url);

    impl WebUrl {
        pub(crate) fn parse(input: &str) -> Result<WebUrl, UrlError> {
            Url::parse(input).map(WebUrl).map_err(|e| match e {
                url::ParseError::RelativeUrlWithoutBase => UrlError::Relative,
                url::ParseError::EmptyHost => UrlError::NoHost,
                _ => UrlError::Invalid,
            })
        }

        pub(crate) fn join(&self, input: &str) -> Result<WebUrl, UrlError> {
            self.0.join(input).map(WebUrl).map_err(|_| UrlError::Invalid)
        }

        pub(crate) fn parse_href(input: &str) -> Result<String, UrlError> {
            WebUrl::parse(input).map(String::from)
        }

        pub(crate) fn as_str(&self) -> &str {
            self.0.as_str()
        }

        pub(crate) fn scheme(&self) -> &str {
            self.0.scheme()
        }

        pub(crate) fn host_str(&self) -> Option<&str> {
            self.0.host_str()
        }

        pub(crate) fn path(&self) -> &str {
            self.0.path()
        }

        pub(crate) fn query(&self) -> Option<&str> {
            self.0.query()
        }

        pub(crate) fn fragment(&self) -> Option<&str> {
            self.0.fragment()
        }

        /// Whether plain `http` is acceptable for this host (RFC 8252 §7.3).
        pub(crate) fn is_loopback(&self) -> bool {
            match self.0.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            }
        }

        pub(crate) fn origin(&self) -> WebOrigin {
            let origin = self.0.origin();
            WebOrigin(origin.is_tuple().then(|| origin.ascii_serialization()))
        }

        pub(crate) fn parse_call(raw: &str) -> Result<CallUrl, UrlError> {
            WebUrl::parse(raw).map(WebUrl::into_call)
        }

        pub(crate) fn join_call(&self, raw: &str) -> Result<CallUrl, UrlError> {
            self.join(raw).map(WebUrl::into_call)
        }

        fn into_call(self) -> CallUrl {
            CallUrl { origin: self.origin(), href: self.0.into() }
        }

        pub(crate) fn with_path(mut self, path: &str) -> Result<WebUrl, UrlError> {
            self.0.set_path(path);
            Ok(self)
        }

        pub(crate) fn with_query_pairs<'a>(
            mut self,
            pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        ) -> Result<WebUrl, UrlError> {
            self.0.query_pairs_mut().extend_pairs(pairs);
            Ok(self)
        }
    }
}

#[cfg(all(feature = "host-urls", target_arch = "wasm32", not(feature = "rust-urls")))]
mod backend {
    use super::{CallUrl, UrlError, WebOrigin};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use web_sys::Url;

    /// The host's serialization and the parts read from it once, so that reading them
    /// crosses to the host no more (and a session holds no host object).
    #[derive(Clone, Debug)]
    pub(crate) struct WebUrl {
        href: String,
        scheme: String,
        host: String,
        path: String,
        origin: WebOrigin,
    }

    /// A non-special base with a path: what has no scheme resolves below it.
    const PROBE_BASE: &str = "x-relative:/";

    impl WebUrl {
        pub(crate) fn parse(input: &str) -> Result<WebUrl, UrlError> {
            match Url::new(input) {
                Ok(url) => Ok(WebUrl::read(&url)),
                Err(_) => Err(WebUrl::why_not(input)),
            }
        }

        pub(crate) fn join(&self, input: &str) -> Result<WebUrl, UrlError> {
            Url::new_with_base(input, &self.href).map(|url| WebUrl::read(&url)).map_err(|_| UrlError::Invalid)
        }

        pub(crate) fn parse_href(input: &str) -> Result<String, UrlError> {
            Url::new(input).map(|url| url.href()).map_err(|_| UrlError::Invalid)
        }

        /// The call path's parses read two parts, not six: each read crosses to the host.
        pub(crate) fn parse_call(raw: &str) -> Result<CallUrl, UrlError> {
            Url::new(raw).map(|url| WebUrl::read_call(&url)).map_err(|_| WebUrl::why_not(raw))
        }

        pub(crate) fn join_call(&self, raw: &str) -> Result<CallUrl, UrlError> {
            Url::new_with_base(raw, &self.href).map(|url| WebUrl::read_call(&url)).map_err(|_| UrlError::Invalid)
        }

        fn read_call(url: &Url) -> CallUrl {
            let origin = url.origin();
            CallUrl { href: url.href(), origin: WebOrigin((origin != "null").then_some(origin)) }
        }

        /// Relative exactly when it has no scheme, as the `url` crate tells: only then does it
        /// parse below a non-special base (a scheme of its own, `https:` among them, would
        /// be parsed on its own again).
        fn why_not(raw: &str) -> UrlError {
            if Url::new_with_base(raw, PROBE_BASE).is_ok() {
                UrlError::Relative
            } else {
                UrlError::Invalid
            }
        }

        fn read(url: &Url) -> WebUrl {
            let origin = url.origin();
            let protocol = url.protocol();
            WebUrl {
                href: url.href(),
                scheme: protocol.strip_suffix(':').unwrap_or(&protocol).to_owned(),
                host: url.hostname(),
                path: url.pathname(),
                origin: WebOrigin((origin != "null").then_some(origin)),
            }
        }

        /// The host's URL for a setter: `href` parsed again (it is canonical, so it parses; if
        /// it ever did not, the caller gets an error, never a URL without what it added).
        fn host_url(&self) -> Result<Url, UrlError> {
            Url::new(&self.href).map_err(|_| UrlError::Invalid)
        }

        pub(crate) fn as_str(&self) -> &str {
            &self.href
        }

        pub(crate) fn scheme(&self) -> &str {
            &self.scheme
        }

        pub(crate) fn host_str(&self) -> Option<&str> {
            Some(self.host.as_str()).filter(|h| !h.is_empty())
        }

        pub(crate) fn path(&self) -> &str {
            &self.path
        }

        pub(crate) fn query(&self) -> Option<&str> {
            super::query_of(&self.href)
        }

        pub(crate) fn fragment(&self) -> Option<&str> {
            super::fragment_of(&self.href)
        }

        /// Whether plain `http` is acceptable for this host (RFC 8252 §7.3). The host
        /// serializes an IPv6 address in brackets and an IPv4 one in dotted decimal.
        pub(crate) fn is_loopback(&self) -> bool {
            let host = self.host.as_str();
            if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
            }
            match host.parse::<Ipv4Addr>() {
                Ok(ip) => ip.is_loopback(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            }
        }

        pub(crate) fn origin(&self) -> WebOrigin {
            self.origin.clone()
        }

        pub(crate) fn with_path(self, path: &str) -> Result<WebUrl, UrlError> {
            let url = self.host_url()?;
            url.set_pathname(path);
            Ok(WebUrl::read(&url))
        }

        /// Appended after the query there is, as `url`'s `query_pairs_mut` does (the
        /// host's `searchParams` would re-encode the pairs already there).
        pub(crate) fn with_query_pairs<'a>(
            self,
            pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        ) -> Result<WebUrl, UrlError> {
            let url = self.host_url()?;
            let mut query = form_urlencoded::Serializer::new(self.query().unwrap_or_default().to_owned());
            query.extend_pairs(pairs);
            url.set_search(&query.finish());
            Ok(WebUrl::read(&url))
        }
    }
}

pub(crate) use backend::WebUrl;

impl From<WebUrl> for String {
    fn from(url: WebUrl) -> String {
        url.as_str().to_owned()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart_from_look_alikes() {
        let loopback = |s: &str| WebUrl::parse(s).map(|u| u.is_loopback());
        assert_eq!(loopback("http://localhost:8080/cb"), Ok(true));
        assert_eq!(loopback("http://LOCALHOST/cb"), Ok(true));
        assert_eq!(loopback("http://127.0.0.1/cb"), Ok(true));
        assert_eq!(loopback("http://127.1/cb"), Ok(true));
        assert_eq!(loopback("http://[::1]:9/cb"), Ok(true));
        assert_eq!(loopback("http://localhost.evil.example/cb"), Ok(false));
        assert_eq!(loopback("http://128.0.0.1/cb"), Ok(false));
        assert_eq!(loopback("com.example.app:/cb"), Ok(false));
    }

    #[test]
    fn query_pairs_are_appended_after_the_query_there_is() {
        let url = WebUrl::parse("https://id.example/end?x=a%20b#f").unwrap();
        let url = url.with_query_pairs([("state", "1 2&3"), ("é", "ü")]).unwrap();
        assert_eq!(url.as_str(), "https://id.example/end?x=a%20b&state=1+2%263&%C3%A9=%C3%BC#f");
        let bare = WebUrl::parse("https://id.example/end").unwrap().with_query_pairs([("a", "b")]).unwrap();
        assert_eq!(bare.as_str(), "https://id.example/end?a=b");
    }

    #[test]
    fn opaque_origins_equal_nothing_not_even_themselves() {
        let opaque = WebUrl::parse("com.example.app:/cb").unwrap().origin();
        assert_ne!(opaque, opaque.clone());
        assert_eq!(opaque.serialization(), "null");
        let a = WebUrl::parse("https://h.example:443/a").unwrap().origin();
        assert_eq!(a, WebUrl::parse("https://h.example/b?c").unwrap().origin());
        assert_eq!(a.serialization(), "https://h.example");
    }

    #[test]
    fn a_location_is_scheme_authority_and_path_normalized() {
        let location = |s: &str| Href::parse(s).map(|h| h.location().to_owned());
        assert_eq!(location("HTTPS://App.Example:443/cb?code=1#x").unwrap(), "https://app.example/cb");
        assert_eq!(location("https://app.example/a/../cb").unwrap(), "https://app.example/cb");
        assert_eq!(location("https://app.example:8443/cb").unwrap(), "https://app.example:8443/cb");
        assert_eq!(location("com.example.app:/cb?code=1").unwrap(), "com.example.app:/cb");
        let href = Href::parse("https://app.example/cb?#f?g").unwrap();
        assert_eq!((href.query(), href.fragment()), (Some(""), Some("f?g")));
        let bare = Href::parse("https://app.example/cb").unwrap();
        assert_eq!((bare.query(), bare.fragment()), (None, None));
        assert!(Href::parse("/cb?code=1").is_err());
    }

    #[test]
    fn parts_and_directories() {
        let url = WebUrl::parse("https://h.example:8443/api/domain/odata?").unwrap();
        assert_eq!((url.scheme(), url.host_str()), ("https", Some("h.example")));
        assert_eq!(url.origin().serialization(), "https://h.example:8443");
        assert_eq!(url.query(), Some(""));
        assert_eq!(url.fragment(), None);
        let dir = WebUrl::parse("https://h.example/api/domain/odata").unwrap().into_directory().unwrap();
        assert_eq!(
            dir.join("General_Contacts_Persons?$top=1").unwrap().as_str(),
            "https://h.example/api/domain/odata/General_Contacts_Persons?$top=1"
        );
        assert_eq!(WebUrl::parse("/relative").err(), Some(UrlError::Relative));
        assert_eq!(WebUrl::parse("https://").err(), Some(UrlError::NoHost));
    }
}
