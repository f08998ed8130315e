//! Requests that belong to another node: an agent on this node acting on a
//! caller another node holds (the call's audio is there). The request is
//! passed on as the agent made it — their session or token is valid on
//! every node sharing the store — and the answer comes back unchanged, so
//! the agent's WebRTC leg connects straight to the node holding the call.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Marks a request one node passed to another: it is never passed on again
/// (two nodes with stale views of each other must not bounce it).
pub const FORWARDED: &str = "x-attendant-forwarded";
/// How long the other node may take (a take sets up a WebRTC leg).
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer taken back (an SDP answer is a few KB).
const MAX_ANSWER: u64 = 64 * 1024;

/// Where other nodes reach this one: `server.node_url`, else from the
/// address it listens on.
pub fn node_url(configured: &str, listen: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.trim_end_matches('/').to_string();
    }
    if listen.ip().is_unspecified() {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        return format!("http://{host}:{}", listen.port());
    }
    format!("http://{listen}")
}

pub fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// Passes `method path` with `body` to the node at `base`, carrying the
/// caller's credentials and content type; its answer (status, type,
/// location, body) is ours.
pub async fn forward(
    base: &str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let url = format!("{base}{path}");
    let pass = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let carried: Vec<(&'static str, String)> = [
        ("content-type", pass(&header::CONTENT_TYPE)),
        ("authorization", pass(&header::AUTHORIZATION)),
        ("cookie", pass(&header::COOKIE)),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    let method = method.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut req = ureq::AgentBuilder::new()
            .timeout(TIMEOUT)
            .redirects(0)
            .build()
            .request(&method, &url)
            .set(FORWARDED, "1");
        for (k, v) in &carried {
            req = req.set(k, v);
        }
        let resp = match req.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status();
        let ctype = resp.header("content-type").map(str::to_string);
        let location = resp.header("location").map(str::to_string);
        let mut text = Vec::new();
        use std::io::Read;
        resp.into_reader()
            .take(MAX_ANSWER)
            .read_to_end(&mut text)
            .map_err(|e| e.to_string())?;
        Ok((status, ctype, location, text))
    })
    .await;
    let (status, ctype, location, text) = match answer {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, node = %base, "the node holding the call did not answer");
            return (
                StatusCode::BAD_GATEWAY,
                "the node holding this call did not answer\n",
            )
                .into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        text,
    )
        .into_response();
    let h = resp.headers_mut();
    for (name, v) in [(header::CONTENT_TYPE, ctype), (header::LOCATION, location)] {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_url_is_configured_or_its_listen_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            node_url("http://10.0.0.5:8080/", at("0.0.0.0:8080")),
            "http://10.0.0.5:8080"
        );
        assert_eq!(node_url("", at("127.0.0.1:9000")), "http://127.0.0.1:9000");
        assert!(node_url("", at("0.0.0.0:9000")).ends_with(":9000"));
    }
}
