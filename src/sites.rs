//! An ERP.net instance's sites, from its auto-discovery document
//! (`{root}/tools/auto-discovery`, older instances `{root}/sys/auto-discovery`):
//! `{ Host, DbName, WebSites: [ { Type, Status, StatusDescription, Url, AdditionalProperties } ] }`.

use crate::http::MAX_SITES_BYTES;
use crate::json::{Object, Wrong};
use crate::urls::WebUrl;
use serde::{Deserialize, Serialize};

/// The sites the session uses, each on the instance's own origin (a site elsewhere is never
/// trusted with the token on the word of a document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InstanceSites {
    /// The Domain API's OData root (`ODataServiceRoot`): relative calls resolve against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odata_root: Option<String>,
    /// The Profile site (`/me`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The Table API site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_api: Option<String>,
    /// The identity server site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A site the document lists but the session does not use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkippedSite {
    /// Its `Status` is `NotWorking`.
    NotWorking {
        /// Its `Type` (`DomainAPI`, `UserProfile`, …).
        site_type: String,
        /// Its `StatusDescription`, capped.
        description: Option<String>,
    },
    /// Its URL is not on the instance's origin (or does not parse).
    Elsewhere {
        /// Its `Type`.
        site_type: String,
    },
}

impl InstanceSites {
    pub(crate) fn from_object(mut s: Object) -> Result<InstanceSites, Wrong> {
        Ok(InstanceSites {
            odata_root: s.string("odata_root")?,
            profile: s.string("profile")?,
            table_api: s.string("table_api")?,
            identity: s.string("identity")?,
        })
    }
}

impl<'de> Deserialize<'de> for InstanceSites {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(InstanceSites::from_object)
    }
}

/// One entry of the document's `WebSites`.
struct WebSite {
    site_type: String,
    status: Option<String>,
    status_description: Option<String>,
    url: Option<String>,
    /// `AdditionalProperties.ODataServiceRoot`.
    odata_service_root: Option<String>,
}

impl WebSite {
    fn from_object(mut w: Object) -> Result<WebSite, Wrong> {
        let odata_service_root = match w.object("AdditionalProperties")? {
            Some(mut properties) => properties.value("ODataServiceRoot").and_then(|v| v.as_str().map(str::to_owned)),
            None => None,
        };
        Ok(WebSite {
            site_type: w.required_string("Type")?,
            status: w.string("Status")?,
            status_description: w.string("StatusDescription")?,
            url: w.string("Url")?,
            odata_service_root,
        })
    }
}

fn web_sites(mut document: Object) -> Result<Vec<WebSite>, Wrong> {
    let sites = document.objects("WebSites")?.ok_or(Wrong("WebSites"))?;
    sites.into_iter().map(WebSite::from_object).collect()
}

impl InstanceSites {
    /// Only the sites on the instance's origin (a stored copy is checked again: whoever can
    /// write the store must not move the calls elsewhere).
    pub(crate) fn on_instance_only(self, root: &WebUrl) -> InstanceSites {
        let keep = |site: Option<String>| site.and_then(|s| on_instance(&s, root));
        InstanceSites {
            odata_root: keep(self.odata_root),
            profile: keep(self.profile),
            table_api: keep(self.table_api),
            identity: keep(self.identity),
        }
    }
}

/// Reads the document. `None` when it is not one (too large, not JSON, no `WebSites`).
pub(crate) fn parse_sites(body: &[u8], root: &WebUrl) -> Option<(InstanceSites, Vec<SkippedSite>)> {
    if body.len() > MAX_SITES_BYTES {
        return None;
    }
    let web_sites = web_sites(Object::parse(body).ok()?).ok()?;
    let mut sites = InstanceSites::default();
    let mut skipped = Vec::new();
    for site in web_sites {
        // `Type` is an open set; "API" is the Domain API's name before 2025.
        let slot = match site.site_type.as_str() {
            "DomainAPI" | "API" => &mut sites.odata_root,
            "UserProfile" => &mut sites.profile,
            "TableAPI" => &mut sites.table_api,
            "ID" => &mut sites.identity,
            _ => continue,
        };
        if slot.is_some() {
            continue; // the first of a type wins
        }
        if site.status.as_deref() == Some("NotWorking") {
            let description =
                site.status_description.map(|d| d.chars().filter(|c| !c.is_control()).take(200).collect());
            skipped.push(SkippedSite::NotWorking { site_type: site.site_type, description });
            continue;
        }
        let address = if matches!(site.site_type.as_str(), "DomainAPI" | "API") {
            site.odata_service_root
                .clone()
                .or_else(|| site.url.clone().map(|u| format!("{}/domain/odata/", u.trim_end_matches('/'))))
        } else {
            site.url.clone()
        };
        match address.and_then(|a| on_instance(&a, root)) {
            Some(url) => *slot = Some(url),
            None => skipped.push(SkippedSite::Elsewhere { site_type: site.site_type }),
        }
    }
    Some((sites, skipped))
}

/// The address as a directory URL (ending in `/`), when it is on the instance's origin.
fn on_instance(address: &str, root: &WebUrl) -> Option<String> {
    let url = WebUrl::parse(address).ok()?;
    if url.origin() != root.origin() || url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    url.into_directory().ok().map(String::from)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sites_on_the_instance_and_skips_the_rest() {
        let root = WebUrl::parse("https://demodb.my.erp.net/").unwrap();
        let body = br#"{"Host":"demodb.my.erp.net","DbName":"demodb","WebSites":[
            {"Type":"ID","Status":"Working","Url":"https://demodb.my.erp.net/id"},
            {"Type":"API","Status":"Working","Url":"https://demodb.my.erp.net/api",
             "AdditionalProperties":{"ODataServiceRoot":"https://demodb.my.erp.net/api/domain/odata/"}},
            {"Type":"DomainAPI","Status":"Working","Url":"https://other.example/api"},
            {"Type":"UserProfile","Status":"NotWorking","StatusDescription":"down\nfor maintenance","Url":"https://demodb.my.erp.net/profile"},
            {"Type":"TableAPI","Status":"Unknown","Url":"https://evil.example/tables"},
            {"Type":"WebClient","Status":"Working","Url":"https://demodb.my.erp.net/client"}]}"#;
        let (sites, skipped) = parse_sites(body, &root).unwrap();
        assert_eq!(sites.identity.as_deref(), Some("https://demodb.my.erp.net/id/"));
        assert_eq!(sites.odata_root.as_deref(), Some("https://demodb.my.erp.net/api/domain/odata/"));
        assert_eq!(sites.profile, None);
        assert_eq!(sites.table_api, None);
        assert_eq!(
            skipped,
            vec![
                SkippedSite::NotWorking {
                    site_type: "UserProfile".into(),
                    description: Some("downfor maintenance".into())
                },
                SkippedSite::Elsewhere { site_type: "TableAPI".into() },
            ]
        );
        assert!(parse_sites(b"<html>", &root).is_none());
        assert!(parse_sites(b"{}", &root).is_none());
    }
}
