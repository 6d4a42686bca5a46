//! Payloads and delivery for each notifier type. Secrets never reach the logs.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Alert;
use super::config::{NotifierConfig, SmtpTls};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// DingTalk's robot signature: base64(HMAC-SHA256(secret, "{timestamp_ms}\n{secret}")),
/// URL-encoded.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encode(&b64)
}

/// Feishu's bot signature: base64(HMAC-SHA256(key = "{timestamp_s}\n{secret}", "")).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text chat notifiers show.
pub fn text(alert: &Alert) -> String {
    let mut t = format!("[dcb] {}\n{}", alert.title, alert.message);
    if let Some(p) = &alert.policy {
        t.push_str(&format!("\npolicy: {p}"));
        if let Some(c) = &alert.collection {
            t.push_str(&format!(", collection: {c}"));
        }
    }
    t.push_str(&format!(
        "\nhost: {}, time: {}",
        alert.host,
        alert.time.to_rfc3339()
    ));
    t
}

/// Send one alert to one notifier, once.
pub async fn send(
    client: &reqwest::Client,
    n: &NotifierConfig,
    alert: &Alert,
) -> Result<(), String> {
    let post = |url: String, body: serde_json::Value| async move {
        let resp = client
            .post(&url)
            .json(&body)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    };
    match n {
        NotifierConfig::Webhook { url, headers, .. } => {
            let mut req = client.post(url).json(alert).timeout(TIMEOUT);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", resp.status()))
            }
        }
        NotifierConfig::Slack { url, .. } => post(url.clone(), json!({"text": text(alert)})).await,
        NotifierConfig::Wecom { url, .. } => {
            post(
                url.clone(),
                json!({"msgtype": "text", "text": {"content": text(alert)}}),
            )
            .await
        }
        NotifierConfig::Dingtalk { url, secret, .. } => {
            let url = match secret {
                Some(secret) => {
                    let ts = chrono::Utc::now().timestamp_millis();
                    let sep = if url.contains('?') { '&' } else { '?' };
                    format!(
                        "{url}{sep}timestamp={ts}&sign={}",
                        dingtalk_sign(secret, ts)
                    )
                }
                None => url.clone(),
            };
            post(
                url,
                json!({"msgtype": "text", "text": {"content": text(alert)}}),
            )
            .await
        }
        NotifierConfig::Feishu { url, secret, .. } => {
            let mut body = json!({"msg_type": "text", "content": {"text": text(alert)}});
            if let Some(secret) = secret {
                let ts = chrono::Utc::now().timestamp();
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(secret, ts));
            }
            post(url.clone(), body).await
        }
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
            email(
                host,
                *port,
                *tls,
                username.as_deref(),
                password.as_deref(),
                from,
                to,
                alert,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn email(
    host: &str,
    port: Option<u16>,
    tls: SmtpTls,
    username: Option<&str>,
    password: Option<&str>,
    from: &str,
    to: &[String],
    alert: &Alert,
) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let builder = match tls {
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
        }
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
    };
    let default_port = match tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let mut builder = builder
        .port(port.unwrap_or(default_port))
        .timeout(Some(TIMEOUT));
    if let Some(user) = username {
        builder = builder.credentials(Credentials::new(
            user.to_string(),
            password.unwrap_or_default().to_string(),
        ));
    }
    let mailer = builder.build();
    let mut msg = Message::builder()
        .from(from.parse().map_err(|e| format!("bad from address: {e}"))?)
        .subject(format!("[dcb] {}", alert.title))
        .header(ContentType::TEXT_PLAIN);
    for addr in to {
        msg = msg.to(addr
            .parse()
            .map_err(|e| format!("bad recipient {addr}: {e}"))?);
    }
    let msg = msg.body(text(alert)).map_err(|e| e.to_string())?;
    mailer
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known vectors, computed independently with Python:
    //   base64(hmac.new(b"SECtest", b"1700000000000\nSECtest", sha256).digest())
    //   base64(hmac.new(b"1700000000\nSECtest", b"", sha256).digest())
    #[test]
    fn signatures_match_independent_vectors() {
        assert_eq!(dingtalk_sign("SECtest", 1_700_000_000_000), DINGTALK_VECTOR);
        assert_eq!(feishu_sign("SECtest", 1_700_000_000), FEISHU_VECTOR);
    }

    const DINGTALK_VECTOR: &str = "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g%3D";
    const FEISHU_VECTOR: &str = "G7XpBpG8NgG02fJOAhX6FRAObIljmFoxVReo8I62pEk=";
}
