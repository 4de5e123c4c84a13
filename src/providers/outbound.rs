//! Outbound HTTP to addresses that workflows and configuration choose (`http_request`,
//! assistants): every connection is checked against inside addresses after DNS resolution and
//! on every redirect ([`Guard`]), redirects are followed hop by hop with credentials dropped
//! when the origin changes ([`Outbound::send`]), and credentials are masked in what is recorded
//! ([`masked_url`], [`masked_header`]).

use std::{
    borrow::Cow,
    error::Error as StdError,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::Context;
use percent_encoding::percent_decode_str;
use reqwest::{
    ClientBuilder, Method, Request, RequestBuilder, Response, StatusCode, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{self, HeaderName, HeaderValue},
};

use crate::domain::{HttpAllowList, inside_address};

/// The most redirects a call follows.
pub const MAX_REDIRECTS: usize = 5;

/// Which inside addresses (loopback, private, link-local, metadata, ...) calls may reach: only
/// those `HERALD_HTTP_ALLOW` lists.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Arc<HttpAllowList>,
}

impl Guard {
    pub fn new(allow: HttpAllowList) -> Self {
        Guard {
            allow: Arc::new(allow),
        }
    }

    /// Checks a URL whose host is an address: such a URL reaches no resolver. A host name is
    /// checked when it is resolved, on every connection.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        self.check(host, ip, false)
    }

    /// Checks what `host` resolved to: every address must be outside, or allowed.
    fn check_resolved(&self, host: &str, addresses: &[SocketAddr]) -> Result<(), Refused> {
        if self.allow.allows_host(host) {
            return Ok(());
        }
        addresses
            .iter()
            .try_for_each(|a| self.check(host, a.ip(), true))
    }

    fn check(&self, host: &str, ip: IpAddr, resolved: bool) -> Result<(), Refused> {
        match inside_address(ip) {
            Some(kind) if !self.allow.allows_address(ip) => Err(Refused {
                host: host.to_string(),
                address: resolved.then_some(ip),
                kind,
            }),
            _ => Ok(()),
        }
    }
}

/// A call to an inside address that `HERALD_HTTP_ALLOW` does not list. No retry can change
/// that: callers fail for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    host: String,
    /// The address the host resolved to (`None`: the host is that address).
    address: Option<IpAddr>,
    kind: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            None => write!(f, "{} is {}", self.host, self.kind)?,
            Some(address) => write!(f, "{} resolves to {address}, {}", self.host, self.kind)?,
        }
        write!(
            f,
            ", which outbound calls may not reach unless {} lists the host or its range",
            HttpAllowList::VARIABLE
        )
    }
}

impl StdError for Refused {}

impl Refused {
    /// The refusal somewhere in `error`'s chain of causes (the resolver's, inside reqwest's).
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return Some(refused);
            }
            current = e.source();
        }
        None
    }
}

/// Resolves names as the system does, then refuses inside addresses the allow list does not
/// cover. Every connection goes through it, a redirect's too.
struct GuardedResolver {
    guard: Guard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            guard.check_resolved(&host, &addresses)?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client whose calls the [`Guard`] watches.
#[derive(Clone, Debug)]
pub struct Outbound {
    client: reqwest::Client,
    guard: Guard,
}

/// Why a call through [`Outbound::send`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// An inside address: permanent.
    #[error("{0}")]
    Refused(Refused),
    /// More than [`MAX_REDIRECTS`] redirects: permanent.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// A redirect Herald cannot follow (not http(s), an unreadable Location): permanent.
    #[error("{0}")]
    BadRedirect(String),
    /// The network or the server: a timeout, a refused connection, a broken answer.
    #[error(transparent)]
    Http(reqwest::Error),
}

impl SendError {
    /// Whether no retry can change the outcome.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SendError::Http(_))
    }
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        match Refused::find(&e) {
            Some(refused) => SendError::Refused(refused.clone()),
            None => SendError::Http(e),
        }
    }
}

impl Outbound {
    /// A client with the settings `configure` gives (timeouts, user agent), a resolver that
    /// checks every address, no proxy (a proxy would resolve names where the guard cannot see)
    /// and no redirect followed by the client itself: [`Outbound::send`] follows them, hop by hop.
    pub fn build(
        guard: Guard,
        configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> anyhow::Result<Self> {
        let client = configure(reqwest::Client::builder())
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("build the outbound HTTP client")?;
        Ok(Outbound { client, guard })
    }

    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.client.request(method, url)
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Sends `request`. Without `follow_redirects` a redirect is the answer; with it, up to
    /// [`MAX_REDIRECTS`] are followed, each hop checked like the first, and a hop to another
    /// origin (https to http included) leaves credential headers behind.
    pub async fn send(
        &self,
        request: Request,
        follow_redirects: bool,
    ) -> Result<Response, SendError> {
        let mut request = request;
        let mut hops = 0;
        loop {
            self.guard
                .check_url(request.url())
                .map_err(SendError::Refused)?;
            let again = if follow_redirects {
                request.try_clone()
            } else {
                None
            };
            let response = self.client.execute(request).await?;
            let status = response.status();
            let followed = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let (Some(next), true) = (again, followed) else {
                return Ok(response);
            };
            let Some(location) = response.headers().get(header::LOCATION) else {
                return Ok(response);
            };
            if hops == MAX_REDIRECTS {
                return Err(SendError::TooManyRedirects);
            }
            hops += 1;
            let to = location
                .to_str()
                .ok()
                .and_then(|l| response.url().join(l).ok())
                .ok_or_else(|| {
                    SendError::BadRedirect("a redirect with an unreadable Location".into())
                })?;
            if !matches!(to.scheme(), "http" | "https") {
                return Err(SendError::BadRedirect(format!(
                    "a redirect to a {}: URL",
                    to.scheme()
                )));
            }
            request = next_hop(next, status, to);
        }
    }
}

/// The request of the next hop: 303 (and 301/302 after a POST) turn into a GET without a body,
/// as browsers do; another origin gets no credential headers.
fn next_hop(mut request: Request, status: StatusCode, to: Url) -> Request {
    let method = request.method().clone();
    let to_get = match status.as_u16() {
        303 => method != Method::HEAD,
        301 | 302 => method == Method::POST,
        _ => false,
    };
    if to_get {
        *request.method_mut() = Method::GET;
        *request.body_mut() = None;
        let headers = request.headers_mut();
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
    }
    if origin(request.url()) != origin(&to) {
        let headers = request.headers_mut();
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|name| *name == header::HOST || is_credential(name.as_str()))
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
    }
    *request.url_mut() = to;
    request
}

fn origin(url: &Url) -> (&str, Option<&str>, Option<u16>) {
    (url.scheme(), url.host_str(), url.port_or_known_default())
}

/// Whether a header or query parameter of this name looks like it carries a credential
/// (`Authorization`, `Cookie`, `X-Api-Key`, `access_token`, `client_secret`, `sig`, ...).
pub fn is_credential(name: &str) -> bool {
    const PARTS: [&str; 12] = [
        "auth",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "key",
        "signature",
        "credential",
        "cookie",
        "session",
        "jwt",
    ];
    const WORDS: [&str; 2] = ["sig", "pass"];
    let name = name.to_ascii_lowercase();
    PARTS.iter().any(|part| name.contains(part))
        || name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| WORDS.contains(&word))
}

/// The URL as recorded (run history, dead letters, API, logs): the values of
/// credential-looking query parameters (and fragment parameters) and a password are `***`.
pub fn masked_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if let Some(query) = url.query() {
        shown.set_query(Some(&masked_pairs(query)));
    }
    if let Some(fragment) = url.fragment() {
        shown.set_fragment(Some(&masked_pairs(fragment)));
    }
    shown.into()
}

/// `a=1&token=x` -> `a=1&token=***`; the other pairs stay exactly as written.
fn masked_pairs(pairs: &str) -> String {
    pairs
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if is_credential(
                    &percent_decode_str(&name.replace('+', " ")).decode_utf8_lossy(),
                ) =>
            {
                Cow::Owned(format!("{name}=***"))
            }
            _ => Cow::Borrowed(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's value as recorded: `***` for a credential.
pub fn masked_header<'a>(name: &HeaderName, value: &'a HeaderValue) -> Cow<'a, str> {
    if is_credential(name.as_str()) {
        Cow::Borrowed("***")
    } else {
        String::from_utf8_lossy(value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

    fn guard(allow: &str) -> Guard {
        Guard::new(HttpAllowList::parse(allow).unwrap())
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_url_with_an_inside_address_is_refused_unless_listed() {
        let none = guard("");
        for inside in [
            "http://127.0.0.1:8080/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://[fd00::1]/",
            "http://0.0.0.0/",
        ] {
            let err = none.check_url(&url(inside)).unwrap_err();
            assert!(
                err.to_string().contains("HERALD_HTTP_ALLOW"),
                "{inside}: {err}"
            );
        }
        let err = none.check_url(&url("http://169.254.169.254/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "169.254.169.254 is the cloud metadata address, which outbound calls may not reach \
             unless HERALD_HTTP_ALLOW lists the host or its range"
        );
        assert!(none.check_url(&url("https://8.8.8.8/")).is_ok());
        assert!(none.check_url(&url("https://crm.example.com/")).is_ok());
        let some = guard("127.0.0.1,10.0.0.0/8");
        assert!(some.check_url(&url("http://127.0.0.1:9/")).is_ok());
        assert!(some.check_url(&url("http://10.2.3.4/")).is_ok());
        assert!(some.check_url(&url("http://127.0.0.2/")).is_err());
    }

    #[test]
    fn a_name_is_refused_when_any_address_it_resolves_to_is_inside() {
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        let none = guard("");
        let err = none
            .check_resolved("crm.example.com", &[addr("8.8.8.8"), addr("10.0.0.7")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.example.com resolves to 10.0.0.7, a private address, which outbound calls may \
             not reach unless HERALD_HTTP_ALLOW lists the host or its range"
        );
        assert!(none.check_resolved("x.example", &[addr("8.8.8.8")]).is_ok());
        assert!(
            guard("crm.internal")
                .check_resolved("crm.internal", &[addr("10.0.0.7")])
                .is_ok()
        );
        assert!(
            guard("10.0.0.0/24")
                .check_resolved("crm.internal", &[addr("10.0.0.7")])
                .is_ok()
        );
    }

    async fn get(outbound: &Outbound, to: &str) -> Result<Response, SendError> {
        let request = outbound.request(Method::GET, url(to)).build().unwrap();
        outbound.send(request, false).await
    }

    #[tokio::test]
    async fn calls_to_the_loopback_are_refused_by_address_and_by_name_unless_allowed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let port = server.address().port();
        let none = Outbound::build(guard(""), |b| b).unwrap();
        for to in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let err = get(&none, &to).await.unwrap_err();
            assert!(matches!(err, SendError::Refused(_)), "{to}: {err:?}");
            assert!(err.is_permanent());
        }
        assert!(server.received_requests().await.unwrap().is_empty());
        let allowed = Outbound::build(guard("127.0.0.1"), |b| b).unwrap();
        for to in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            assert_eq!(get(&allowed, &to).await.unwrap().status(), 200, "{to}");
        }
        let by_name = Outbound::build(guard("localhost"), |b| b).unwrap();
        assert_eq!(
            get(&by_name, &format!("http://localhost:{port}/"))
                .await
                .unwrap()
                .status(),
            200
        );
        assert!(
            get(&by_name, &format!("http://127.0.0.1:{port}/"))
                .await
                .is_err()
        );
        // A network failure is not a refusal.
        let err = get(&allowed, "http://127.0.0.1:9/").await.unwrap_err();
        assert!(!err.is_permanent(), "{err:?}");
    }

    #[test]
    fn a_hop_to_another_origin_drops_credentials_and_a_303_becomes_a_get() {
        let client = reqwest::Client::new();
        let request = || {
            client
                .post("https://crm.example.com/a")
                .header("authorization", "Bearer t")
                .header("cookie", "s=1")
                .header("x-api-key", "k")
                .header("x-trace", "t-1")
                .header("content-type", "application/json")
                .body("{}")
                .build()
                .unwrap()
        };
        let names = |r: &Request| {
            let mut names: Vec<String> = r.headers().keys().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        let same = next_hop(
            request(),
            StatusCode::TEMPORARY_REDIRECT,
            url("https://crm.example.com/b"),
        );
        assert_eq!(same.method(), Method::POST);
        assert!(same.body().is_some());
        assert_eq!(
            names(&same),
            [
                "authorization",
                "content-type",
                "cookie",
                "x-api-key",
                "x-trace"
            ]
        );
        for other in [
            "https://other.example.com/b",
            "http://crm.example.com/b",
            "https://crm.example.com:8443/b",
        ] {
            let hop = next_hop(request(), StatusCode::PERMANENT_REDIRECT, url(other));
            assert_eq!(names(&hop), ["content-type", "x-trace"], "{other}");
            assert_eq!(hop.url().as_str(), other);
        }
        let see_other = next_hop(
            request(),
            StatusCode::SEE_OTHER,
            url("https://crm.example.com/c"),
        );
        assert_eq!(see_other.method(), Method::GET);
        assert!(see_other.body().is_none());
        assert!(!names(&see_other).contains(&"content-type".to_string()));
        let found = next_hop(
            request(),
            StatusCode::FOUND,
            url("https://crm.example.com/c"),
        );
        assert_eq!(found.method(), Method::GET);
    }

    #[test]
    fn credential_names_are_recognised() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "apikey",
            "api_key",
            "key",
            "token",
            "access_token",
            "client_secret",
            "password",
            "sig",
            "signature",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "x-hub-signature-256",
            "session_id",
            "Ocp-Apim-Subscription-Key",
        ] {
            assert!(is_credential(name), "{name}");
        }
        for name in [
            "accept",
            "content-type",
            "page",
            "q",
            "x-trace",
            "user_id",
            "design",
            "country_code",
        ] {
            assert!(!is_credential(name), "{name}");
        }
    }

    #[test]
    fn the_recorded_url_masks_credential_parameters_and_the_password() {
        assert_eq!(
            masked_url(&url(
                "https://u:pw@crm.example.com/x?api_key=s&page=2&q=a%20b&access%5Ftoken=s&sig&x=1#id_token=s&state=ok"
            )),
            "https://u:***@crm.example.com/x?api_key=***&page=2&q=a%20b&access%5Ftoken=***&sig&x=1#id_token=***&state=ok"
        );
        assert_eq!(
            masked_url(&url("https://crm.example.com/x")),
            "https://crm.example.com/x"
        );
        let value = HeaderValue::from_static("Bearer s");
        assert_eq!(masked_header(&header::AUTHORIZATION, &value), "***");
        assert_eq!(masked_header(&header::ACCEPT, &value), "Bearer s");
    }
}
