//! Signs a user in at the test provider's development login and consent pages over HTTP,
//! as a person in a browser would: cookies kept, redirects followed by hand, forms posted.
//! Demo and test support only; a real application sends the user's own browser.

use url::Url;

/// Where the browser ends up after signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserReturn {
    /// A redirect to the redirect URI (code in the query or fragment).
    Redirect(String),
    /// A `form_post` response: the form the browser would POST to the redirect URI.
    FormPost {
        /// The redirect URI.
        action: String,
        /// The form body.
        body: String,
    },
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = tag.get(start..)?;
    rest.get(..rest.find('"')?)
}

fn unescape(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#x2F;", "/")
        .replace("&#x3D;", "=")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The first form of a page: its action and its hidden inputs.
fn form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let open = html.get(start..)?;
    let tag_end = open.find('>')?;
    let action = unescape(attribute(open.get(..tag_end)?, "action")?);
    let body = open.get(..open.find("</form>").unwrap_or(open.len()))?;
    let fields = body
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = input.get(..input.find('>')?)?;
            (attribute(tag, "type") == Some("hidden"))
                .then(|| {
                    Some((unescape(attribute(tag, "name")?), unescape(attribute(tag, "value").unwrap_or_default())))
                })
                .flatten()
        })
        .collect();
    Some((action, fields))
}

/// Follows the authorization URL through login (as `user`) and consent; returns where the
/// browser is sent back.
pub fn sign_in_headless(authorization_url: &str, user: &str) -> Result<BrowserReturn, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into();
    let provider = Url::parse(authorization_url).map_err(|e| e.to_string())?.origin();
    let mut url = Url::parse(authorization_url).map_err(|e| e.to_string())?;
    let mut post: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let mut response = match post.take() {
            Some(fields) => {
                let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                agent.post(url.as_str()).send_form(pairs)
            }
            None => agent.get(url.as_str()).call(),
        }
        .map_err(|e| format!("provider unreachable: {e}"))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location =
                response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("redirect without Location")?;
            let next = url.join(location).map_err(|e| e.to_string())?;
            if next.origin() != provider {
                return Ok(BrowserReturn::Redirect(next.into()));
            }
            url = next;
            continue;
        }
        let html = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("the provider answered {status}: {}", html.chars().take(300).collect::<String>()));
        }
        let (action, mut fields) = form(&html).ok_or("a page without a form")?;
        let action_url = url.join(&action).map_err(|e| e.to_string())?;
        if action_url.origin() != provider {
            let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
            return Ok(BrowserReturn::FormPost { action: action_url.into(), body });
        }
        if fields.iter().any(|(k, v)| k == "prompt" && v == "login") {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "demo".into()));
        }
        url = action_url;
        post = Some(fields);
    }
    Err("too many steps at the provider".into())
}
