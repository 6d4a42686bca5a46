//! Payloads and one delivery attempt for each notifier type. Secrets, tokens and
//! full URLs never reach an error message.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Alert;
use crate::config::alerts::{NotifierConfig, SmtpTls};

/// How long one delivery attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// False for answers that will not change (HTTP 4xx, SMTP 5xx, bad addresses).
    pub retry: bool,
}

impl Failure {
    fn transient(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }

    fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

/// DingTalk's robot signature: urlencode(base64(HMAC-SHA256(key = secret,
/// msg = "{timestamp_ms}\n{secret}"))), sent as `&timestamp=…&sign=…`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encode(&b64)
}

/// Feishu's bot signature: base64(HMAC-SHA256(key = "{timestamp_s}\n{secret}",
/// msg = "")), sent in the body with the timestamp.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The details under the message: policy, collection, host, time.
fn details(alert: &Alert) -> String {
    let mut t = String::new();
    if let Some(p) = &alert.policy {
        t.push_str(&format!("\npolicy: {p}"));
    }
    if let Some(c) = &alert.collection {
        t.push_str(&format!("\ncollection: {c}"));
    }
    t.push_str(&format!(
        "\nhost: {}\ntime: {}",
        alert.host,
        alert.time.to_rfc3339()
    ));
    t
}

/// The text chat notifiers show: `[dcb] <title>`, the message, then the details.
/// (DingTalk robots with a keyword check can use the keyword `dcb`.)
pub fn text(alert: &Alert) -> String {
    format!("[dcb] {}\n{}{}", alert.title, alert.message, details(alert))
}

/// An email's subject.
pub fn subject(alert: &Alert) -> String {
    format!("[dcb] {}", alert.title)
}

/// An email's plain-text body: the message, then the details and the alert's key.
pub fn email_body(alert: &Alert) -> String {
    let kind = serde_json::to_value(alert.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!(
        "{}\n{}\nevent: {kind}\nkey: {}\n",
        alert.message,
        details(alert),
        alert.key
    )
}

/// The request body each HTTP notifier gets; `now` signs Feishu's.
pub fn http_body(n: &NotifierConfig, alert: &Alert, now: chrono::DateTime<chrono::Utc>) -> Value {
    match n {
        NotifierConfig::Webhook { .. } => serde_json::to_value(alert).unwrap_or(Value::Null),
        NotifierConfig::Slack { .. } => json!({"text": text(alert)}),
        NotifierConfig::Dingtalk { .. } | NotifierConfig::Wecom { .. } => {
            json!({"msgtype": "text", "text": {"content": text(alert)}})
        }
        NotifierConfig::Feishu { secret, .. } => {
            let mut body = json!({"msg_type": "text", "content": {"text": text(alert)}});
            if let Some(secret) = secret {
                let ts = now.timestamp();
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(secret, ts));
            }
            body
        }
        NotifierConfig::Email { .. } => Value::Null,
    }
}

/// The URL each HTTP notifier is sent to; `now` signs DingTalk's.
pub fn http_url(n: &NotifierConfig, now: chrono::DateTime<chrono::Utc>) -> String {
    match n {
        NotifierConfig::Dingtalk {
            url,
            secret: Some(secret),
            ..
        } => {
            let ts = now.timestamp_millis();
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{sep}timestamp={ts}&sign={}",
                dingtalk_sign(secret, ts)
            )
        }
        NotifierConfig::Webhook { url, .. }
        | NotifierConfig::Slack { url, .. }
        | NotifierConfig::Dingtalk { url, .. }
        | NotifierConfig::Wecom { url, .. }
        | NotifierConfig::Feishu { url, .. } => url.clone(),
        NotifierConfig::Email { host, .. } => host.clone(),
    }
}

/// Send one alert to one notifier, once. `ca_pem` is an email notifier's extra CA.
pub async fn send(
    client: &reqwest::Client,
    n: &NotifierConfig,
    ca_pem: Option<&[u8]>,
    alert: &Alert,
) -> Result<(), Failure> {
    let now = chrono::Utc::now();
    match n {
        NotifierConfig::Email {
            host,
            port,
            tls,
            username,
            password,
            from,
            to,
            ..
        } => {
            let server = Smtp {
                host,
                port: port.unwrap_or(tls.default_port()),
                tls: *tls,
                username: username.as_deref(),
                password: password.as_deref(),
                ca_pem,
            };
            email(&server, from, to, alert).await
        }
        NotifierConfig::Webhook { headers, .. } => {
            let mut req = client.post(http_url(n, now));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            post(req, &http_body(n, alert, now), false).await
        }
        _ => {
            post(
                client.post(http_url(n, now)),
                &http_body(n, alert, now),
                true,
            )
            .await
        }
    }
}

/// POST `body` as JSON. With `api_errors`, a 200 answer whose JSON carries a
/// non-zero `errcode` (DingTalk, WeCom) or `code` / `StatusCode` (Feishu) fails too:
/// those robots answer a bad signature or a missing keyword with HTTP 200.
async fn post(req: reqwest::RequestBuilder, body: &Value, api_errors: bool) -> Result<(), Failure> {
    let resp = req
        .json(body)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| Failure::transient(describe(&e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        let msg = format!("HTTP {status}");
        let retry = !status.is_client_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        return Err(Failure {
            message: msg,
            retry,
        });
    }
    if api_errors {
        let text = resp
            .text()
            .await
            .map_err(|e| Failure::transient(describe(&e.without_url())))?;
        if let Some(f) = api_error(&text) {
            return Err(f);
        }
    }
    Ok(())
}

/// Robot error codes that may pass: rate limits and "system busy" (DingTalk 130101
/// and 410100, WeCom 45009, Feishu 11232, and -1 on several). Every other code (a bad
/// signature, token, keyword or IP allow-list: DingTalk 310000 and 300001, WeCom 93000,
/// Feishu 19021 to 19024) answers the same however often it is asked.
const TRANSIENT_ROBOT_CODES: [i64; 5] = [-1, 130101, 410100, 45009, 11232];

/// The error a chat robot reports in a 200 answer, if any; retried only when the code
/// says it may pass.
pub fn api_error(body: &str) -> Option<Failure> {
    let v: Value = serde_json::from_str(body).ok()?;
    let (code, msg) = [
        ("errcode", "errmsg"),
        ("code", "msg"),
        ("StatusCode", "StatusMessage"),
    ]
    .into_iter()
    .find_map(|(c, m)| Some((v.get(c)?.as_i64()?, v.get(m).and_then(Value::as_str))))?;
    if code == 0 {
        return None;
    }
    let msg: String = msg.unwrap_or("").chars().take(200).collect();
    let message = format!("the robot answered error {code}: {msg}");
    Some(if TRANSIENT_ROBOT_CODES.contains(&code) {
        Failure::transient(message)
    } else {
        Failure::permanent(format!(
            "{message} (not retried: check the URL's token, the signing secret, the \
             keyword and the IP allow-list of the robot)"
        ))
    })
}

/// An error and its causes on one line ("error sending request: connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

struct Smtp<'a> {
    host: &'a str,
    port: u16,
    tls: SmtpTls,
    username: Option<&'a str>,
    password: Option<&'a str>,
    ca_pem: Option<&'a [u8]>,
}

async fn email(server: &Smtp<'_>, from: &str, to: &[String], alert: &Alert) -> Result<(), Failure> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    type Transport = AsyncSmtpTransport<Tokio1Executor>;
    // The public roots, plus the notifier's own CA when it names one.
    let params = || {
        let mut b = TlsParameters::builder(server.host.to_string());
        if let Some(pem) = server.ca_pem {
            let ca = Certificate::from_pem(pem)
                .map_err(|e| Failure::permanent(format!("bad caFile: {e}")))?;
            b = b.add_root_certificate(ca);
        }
        b.build_rustls()
            .map_err(|e| Failure::permanent(format!("cannot set up TLS: {e}")))
    };
    let builder = Transport::builder_dangerous(server.host);
    let builder = match server.tls {
        SmtpTls::Starttls => builder.tls(Tls::Required(params()?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(params()?)),
        SmtpTls::None => builder,
    };
    let mut builder = builder.port(server.port).timeout(Some(TIMEOUT));
    if let Some(user) = server.username {
        builder = builder.credentials(Credentials::new(
            user.to_string(),
            server.password.unwrap_or_default().to_string(),
        ));
    }
    let mailer = builder.build();
    let mut msg = Message::builder()
        .from(
            from.parse()
                .map_err(|e| Failure::permanent(format!("bad `from` address: {e}")))?,
        )
        .subject(subject(alert))
        .header(ContentType::TEXT_PLAIN);
    for addr in to {
        msg = msg.to(addr
            .parse()
            .map_err(|e| Failure::permanent(format!("bad recipient `{addr}`: {e}")))?);
    }
    let msg = msg
        .body(email_body(alert))
        .map_err(|e| Failure::permanent(e.to_string()))?;
    mailer.send(msg).await.map(|_| ()).map_err(|e| Failure {
        retry: !e.is_permanent(),
        message: describe(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // DingTalk's and Feishu's signatures match vectors computed independently, with
    // Python's hmac/base64/urllib (not with this code):
    //   quote_plus(b64encode(hmac.new(b"SECtest", b"1700000000000\nSECtest", sha256).digest()))
    //   b64encode(hmac.new(b"1700000000\nSECtest", b"", sha256).digest())
    #[test]
    fn signatures_match_independent_vectors() {
        assert_eq!(dingtalk_sign("SECtest", 1_700_000_000_000), DINGTALK_VECTOR);
        assert_eq!(feishu_sign("SECtest", 1_700_000_000), FEISHU_VECTOR);
    }

    const DINGTALK_VECTOR: &str = "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g%3D";
    const FEISHU_VECTOR: &str = "G7XpBpG8NgG02fJOAhX6FRAObIljmFoxVReo8I62pEk=";

    // The signed DingTalk URL keeps the access token and appends timestamp and sign,
    // with `?` when the URL has no query yet.
    #[test]
    fn dingtalk_url_appends_timestamp_and_sign() {
        let now = chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let n = |url: &str| NotifierConfig::Dingtalk {
            url: url.into(),
            secret: Some("SECtest".into()),
            name: None,
            events: vec![],
        };
        assert_eq!(
            http_url(
                &n("https://oapi.dingtalk.com/robot/send?access_token=t"),
                now
            ),
            format!(
                "https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1700000000000&sign={DINGTALK_VECTOR}"
            )
        );
        assert_eq!(
            http_url(&n("http://h/robot"), now),
            format!("http://h/robot?timestamp=1700000000000&sign={DINGTALK_VECTOR}")
        );
    }

    // Feishu's signed body carries the timestamp (seconds, as a string) and the sign.
    #[test]
    fn feishu_body_is_signed() {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let n = NotifierConfig::Feishu {
            url: "http://h/".into(),
            secret: Some("SECtest".into()),
            name: None,
            events: vec![],
        };
        let alert = Alert::new(
            super::super::EventKind::Failure,
            super::super::AlertKey::Database,
            "t",
            "m",
        );
        let body = http_body(&n, &alert, now);
        assert_eq!(body["msg_type"], "text");
        assert_eq!(body["timestamp"], "1700000000");
        assert_eq!(body["sign"], FEISHU_VECTOR);
    }

    // Robots that answer HTTP 200 with an error code are failures; code 0 is success.
    // A bad signature, token or keyword is permanent; a rate limit may pass.
    #[test]
    fn robot_error_codes_are_failures() {
        assert_eq!(api_error(r#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert_eq!(api_error(r#"{"code":0,"msg":"success","data":{}}"#), None);
        assert_eq!(
            api_error(r#"{"StatusCode":0,"StatusMessage":"success"}"#),
            None
        );
        assert_eq!(api_error("ok"), None);
        let sign = api_error(r#"{"errcode":310000,"errmsg":"sign not match"}"#).unwrap();
        assert!(!sign.retry);
        assert!(
            sign.message
                .starts_with("the robot answered error 310000: sign not match (not retried"),
            "{}",
            sign.message
        );
        for permanent in [
            r#"{"errcode":300001,"errmsg":"token is not exist"}"#,
            r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
            r#"{"code":19021,"msg":"sign match fail"}"#,
        ] {
            assert!(!api_error(permanent).unwrap().retry, "{permanent}");
        }
        for transient in [
            r#"{"errcode":130101,"errmsg":"send too fast"}"#,
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
            r#"{"errcode":-1,"errmsg":"system busy"}"#,
        ] {
            assert!(api_error(transient).unwrap().retry, "{transient}");
        }
    }

    // The chat text starts with `[dcb] <title>`, then the message and the details.
    #[test]
    fn chat_text_layout() {
        let mut a = Alert::new(
            super::super::EventKind::Failure,
            super::super::AlertKey::Database,
            "Title",
            "Message",
        );
        a.policy = Some("hot".into());
        a.collection = Some("api_logs".into());
        a.host = "plant-1".into();
        a.time = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            text(&a),
            "[dcb] Title\nMessage\npolicy: hot\ncollection: api_logs\nhost: plant-1\ntime: 2023-11-14T22:13:20+00:00"
        );
    }
}
