//! The Prometheus HTTP API as analysis asks it: one instant query
//! (`GET /api/v1/query?query=...&time=...`) through reqwest, with a deadline per call,
//! a few retries under a retry budget (a Prometheus in trouble is not hammered), and
//! TLS with a private CA and a bearer token when the site's Prometheus needs them
//! (`rollout serve --prometheus-ca --prometheus-token-file`). Prometheus computes;
//! this only reads the one number a check compares.

use std::time::Duration;

use serde::Deserialize;

use crate::retry::{Backoff, RetryBudget};

/// How long one query may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of one query at most (a connection refused, a timeout, a 5xx), within the
/// budget.
const RETRIES: usize = 2;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--prometheus-ca {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("--prometheus-token-file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("cannot build the Prometheus client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How to reach the site's Prometheus: its CA, and a bearer token.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The CA that signed Prometheus's certificate (besides the system's).
    pub ca: Option<reqwest::Certificate>,
    pub token: Option<String>,
}

impl Access {
    /// From the files `rollout serve` was given.
    pub fn load(ca: Option<&std::path::Path>, token: Option<&std::path::Path>) -> Result<Access, Error> {
        let ca = ca
            .map(|p| {
                let failed = |reason: String| Error::Ca {
                    path: p.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(p).map_err(|e| failed(e.to_string()))?;
                crate::pem::certificates(&pem).map_err(|e| failed(format!("it {e}")))?;
                reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| failed(format!("not a PEM certificate ({e}): give the CA's certificate file")))
            })
            .transpose()?;
        let token = token
            .map(|p| {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Token {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                let first = text.lines().next().unwrap_or_default().trim().to_string();
                if first.is_empty() {
                    return Err(Error::Token {
                        path: p.display().to_string(),
                        reason: "the first line is empty: it must hold the token".into(),
                    });
                }
                Ok(first)
            })
            .transpose()?;
        Ok(Access { ca, token })
    }
}

/// A client of the Prometheus HTTP API, shared by every rollout.
#[derive(Debug)]
pub struct Prometheus {
    client: reqwest::Client,
    token: Option<String>,
    budget: RetryBudget,
}

impl Prometheus {
    pub fn new(access: &Access) -> Result<Prometheus, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(ca) = &access.ca {
            builder = builder.add_root_certificate(ca.clone());
        }
        Ok(Prometheus {
            client: builder.build()?,
            token: access.token.clone(),
            // Half as many retries as first attempts, over a minute: a check or two
            // every few seconds may retry now and then, never pile up.
            budget: RetryBudget::new(0.5, Duration::from_secs(60)),
        })
    }

    /// The value of `promql` at `at_ms` (unix ms) on the Prometheus at `base`, or why
    /// there is none (unreachable, refused, no series, several, NaN): an inconclusive
    /// measurement's reason.
    pub async fn query(&self, base: &str, promql: &str, at_ms: i64) -> Result<f64, String> {
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let time = format!("{:.3}", at_ms as f64 / 1000.0);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        self.budget.first_attempt();
        let mut attempt = 0;
        loop {
            let mut request = self.client.get(&url).query(&[("query", promql), ("time", &time)]);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let failure = match request.send().await {
                Ok(answer) => {
                    let status = answer.status();
                    match answer.text().await {
                        Ok(body) if !status.is_server_error() => return read_answer(status.as_u16(), &body),
                        Ok(body) => format!("HTTP {status}: {}", crate::text::one_line(body.trim())),
                        Err(e) => format!("reading its answer: {}", cause(&e)),
                    }
                }
                Err(e) => cause(&e),
            };
            attempt += 1;
            if attempt > RETRIES || !self.budget.try_retry() {
                return Err(format!("Prometheus at {base} unreachable: {failure}"));
            }
            tokio::time::sleep(backoff.next().unwrap_or_default()).await;
        }
    }
}

/// An error with its innermost cause (a refused connection says so).
fn cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else {
        text
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    value: (f64, String),
}

/// The one number in an answer of the query API (HTTP `status`, JSON `body`), or why
/// there is none.
fn read_answer(status: u16, body: &str) -> Result<f64, String> {
    let answer: Answer = serde_json::from_str(body).map_err(|_| {
        format!(
            "HTTP {status}, not an answer of the Prometheus query API: {}",
            crate::text::one_line(&body.chars().take(200).collect::<String>())
        )
    })?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus refused the query: {}: {}",
            answer.error_type.unwrap_or_default(),
            answer.error.unwrap_or_default()
        ));
    }
    let data = answer.data.ok_or("Prometheus answered without data")?;
    let text = match data.result_type.as_str() {
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            v
        }
        "vector" => {
            let mut series: Vec<Series> = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            match series.len() {
                0 => return Err("the query returned no series (no data yet, or no host on that version)".into()),
                1 => series.remove(0).value.1,
                n => {
                    let labels: Vec<String> = series[0].metric.keys().cloned().collect();
                    return Err(format!(
                        "the query returned {n} series (labels {}): aggregate it to one (sum, avg, max)",
                        labels.join(", ")
                    ));
                }
            }
        }
        other => return Err(format!("the query returned a {other}: a check needs one number")),
    };
    match text.parse::<f64>() {
        Ok(v) if v.is_nan() => Err("the query's value is NaN (no requests in its window?)".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("the query's value `{text}` is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::read_answer;

    #[test]
    fn the_one_number_of_an_answer_or_why_there_is_none() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1764400000.1,"0.0123"]}]}}"#;
        assert_eq!(read_answer(200, vector), Ok(0.0123));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1764400000.1,"2"]}}"#;
        assert_eq!(read_answer(200, scalar), Ok(2.0));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(read_answer(200, empty).unwrap_err().contains("no series"));
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":"a"},"value":[1,"1"]},{"metric":{"version":"b"},"value":[1,"2"]}]}}"#;
        let e = read_answer(200, two).unwrap_err();
        assert!(
            e.contains("2 series (labels version)") && e.contains("aggregate"),
            "{e}"
        );
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(read_answer(200, nan).unwrap_err().contains("NaN"));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#;
        assert_eq!(
            read_answer(400, bad).unwrap_err(),
            "Prometheus refused the query: bad_data: 1:5: parse error: unexpected end of input"
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(read_answer(200, matrix).unwrap_err().contains("a matrix"));
        assert!(read_answer(404, "404 page not found").unwrap_err().contains("HTTP 404"));
    }
}
