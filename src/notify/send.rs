//! One HTTP request to a sink and what its answer means: delivered (2xx), worth
//! retrying (429, 5xx, no answer in time; `Retry-After` read), or refused for good
//! (any other status, with the receiver's words). Errors never show the URL's
//! credentials or query.

use std::time::Duration;

use super::sinks::Sink;
use super::{Error, redact};
use crate::clock::{Clock, SystemClock};

/// What a sink made of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx: "HTTP 200 OK".
    Delivered(String),
    /// Worth trying again, after `after` when the receiver said (`Retry-After`).
    Retry { why: String, after: Option<Duration> },
    /// Refused for good (another 4xx): trying again would get the same.
    Refused(String),
}

/// Characters of a receiver's answer kept in an error.
const ANSWER_CHARS: usize = 200;

/// The HTTP client of one sink: its timeout, its private CA, no redirects (a
/// webhook that moves should be configured where it went).
pub fn client(sink: &Sink) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(sink.timeout)
        .connect_timeout(sink.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rollout/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &sink.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Client {
            sink: sink.name.clone(),
            reason: format!("its CA: {e}"),
        })? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Error::Client {
        sink: sink.name.clone(),
        reason: e.without_url().to_string(),
    })
}

/// POSTs `body` with `headers` to `url` and reads the answer.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Answer {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            return Answer::Retry {
                why: failure(e, url),
                after: None,
            };
        }
    };
    let status = answer.status();
    let after = retry_after(answer.headers());
    let said = answer
        .text()
        .await
        .map(|t| {
            crate::text::one_line(t.trim())
                .chars()
                .take(ANSWER_CHARS)
                .collect::<String>()
        })
        .unwrap_or_default();
    let line = if said.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {said}")
    };
    if status.is_success() {
        Answer::Delivered(format!("HTTP {status}"))
    } else if status.as_u16() == 429 || status.is_server_error() {
        Answer::Retry { why: line, after }
    } else {
        Answer::Refused(line)
    }
}

/// Why a request got no answer, without the URL reqwest would put in (it may carry
/// a token in its query).
fn failure(e: reqwest::Error, url: &str) -> String {
    if e.is_timeout() {
        return format!("no answer from {} in time", redact(url));
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    format!("{}: {}", redact(url), crate::text::one_line(&text))
}

/// `Retry-After` as seconds or an HTTP date, at most an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
            // An HTTP date is the real time, whatever clock the controller runs on.
            let ms = at.as_millisecond() - SystemClock.now_ms();
            Duration::from_millis(ms.max(0) as u64)
        }
    };
    Some(wait.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date past is now");
        h.insert(reqwest::header::RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)));
    }
}
