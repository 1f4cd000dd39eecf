//! A signed-in browser without a browser, for the dashboard's tests over HTTP: the
//! session cookie the sign-in form set, pages fetched and forms posted with it, and
//! the fields of a page's forms (its CSRF token, a request id, a gate id).

use reqwest::StatusCode;

use super::identity::token;

/// A signed-in browser: its session cookie.
pub struct Browser {
    base: String,
    /// `rollout_session=...`, as the browser sends it back.
    pub cookie: String,
    http: reqwest::Client,
}

impl Browser {
    /// Signs `principal` in at the dashboard `base` (ending in `/`) with its token.
    pub async fn sign_in(base: &str, principal: &str) -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let answer = http
            .post(format!("{base}login"))
            .form(&[("token", token(principal))])
            .send()
            .await
            .unwrap();
        let cookie = answer
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_string();
        Browser {
            base: base.to_string(),
            cookie,
            http,
        }
    }

    /// `path`, which must answer 200.
    pub async fn page(&self, path: &str) -> String {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        answer.text().await.unwrap()
    }

    /// Posts `form` to `path`: the status and the page.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        (answer.status(), answer.text().await.unwrap())
    }
}

/// The value of the first `<input name=NAME value=...>` of `html`.
pub fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}
