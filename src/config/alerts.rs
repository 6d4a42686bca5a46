//! The `alerts:` section of dcb.yaml.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Alerting: where findings go and how often they may repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsConfig {
    /// The same alert is not repeated more often than this.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,

    /// Where alerts are sent. Every alert is also a JSON line in
    /// `<backupRoot>/logs/alerts.log`.
    #[serde(default)]
    pub notifiers: Vec<NotifierConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            cooldown: default_cooldown(),
            notifiers: Vec::new(),
        }
    }
}

fn default_cooldown() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A problem: failed backups, stale collections, low disk, database down, an
    /// invalid policy.
    Failure,
    /// A problem that cleared.
    Resolved,
    /// A collection backed up successfully (for dead-man's-switch services).
    Success,
    /// A policy's run began.
    RunStart,
}

fn default_events() -> Vec<EventKind> {
    vec![EventKind::Failure, EventKind::Resolved]
}

/// One destination for alerts.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierConfig {
    /// POST the alert as JSON to a URL.
    Webhook {
        /// Where to POST.
        url: String,
        /// Extra HTTP headers, e.g. an authorization token.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        headers: std::collections::BTreeMap<String, String>,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
    /// A Slack incoming webhook.
    Slack {
        /// The incoming-webhook URL.
        url: String,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
    /// A DingTalk (钉钉) group robot.
    Dingtalk {
        /// The robot's webhook URL (with its access_token).
        url: String,
        /// The robot's signing secret (`SEC…`), when signing is enabled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
    /// A WeCom (企业微信) group robot.
    Wecom {
        /// The robot's webhook URL (with its key).
        url: String,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
    /// A Feishu / Lark (飞书) group bot.
    Feishu {
        /// The bot's webhook URL.
        url: String,
        /// The bot's signing secret, when signature verification is enabled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
    /// Email over SMTP.
    Email {
        /// SMTP server host name.
        host: String,
        /// Port. Default: 587 for starttls, 465 for tls, 25 for none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// `starttls` (default), `tls` (implicit TLS), or `none` (local relays only).
        #[serde(default)]
        tls: SmtpTls,
        /// User name for SMTP authentication.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// Password for SMTP authentication; use `${VAR}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        /// A PEM file of CA certificates to trust besides the public roots, for a mail
        /// server with a certificate from a private CA. Relative to dcb.yaml.
        #[serde(default, rename = "caFile", skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
        /// Sender address.
        from: String,
        /// Recipient addresses.
        #[schemars(length(min = 1))]
        to: Vec<String>,
        /// A name for logs (default: the type).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Which events this notifier gets. Default: failure and resolved.
        #[serde(default = "default_events")]
        events: Vec<EventKind>,
    },
}

// URL paths and queries carry tokens; secrets, passwords and header values are
// credentials: none of them is shown.
impl std::fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        let mut d = f.debug_struct(self.kind());
        d.field("label", &self.label())
            .field("target", &self.target());
        match self {
            NotifierConfig::Webhook { headers, .. } => {
                let names: Vec<&String> = headers.keys().collect();
                d.field("headers", &names);
            }
            NotifierConfig::Dingtalk { secret, .. } | NotifierConfig::Feishu { secret, .. } => {
                d.field("secret", &hidden(secret));
            }
            NotifierConfig::Email {
                tls,
                username,
                password,
                from,
                to,
                ..
            } => {
                d.field("tls", tls)
                    .field("username", username)
                    .field("password", &hidden(password))
                    .field("from", from)
                    .field("to", to);
            }
            NotifierConfig::Slack { .. } | NotifierConfig::Wecom { .. } => {}
        }
        d.field("events", &self.events()).finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

impl SmtpTls {
    /// 587 (submission) for STARTTLS, 465 (submissions) for implicit TLS, 25 for plain.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

impl AlertsConfig {
    /// The same configuration with relative file paths (an email notifier's `caFile`)
    /// taken relative to `base`, the folder of dcb.yaml.
    pub fn relative_to(&self, base: &std::path::Path) -> AlertsConfig {
        let mut c = self.clone();
        for n in &mut c.notifiers {
            if let NotifierConfig::Email {
                ca_file: Some(file),
                ..
            } = n
                && std::path::Path::new(file.as_str()).is_relative()
            {
                *file = base.join(&*file).display().to_string();
            }
        }
        c
    }

    /// Every problem serde and the schema cannot see, as (JSON pointer under
    /// `alerts`, message). Messages name the field, never its value: URLs carry
    /// tokens and the rest may carry passwords.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, n) in self.notifiers.iter().enumerate() {
            for (field, msg) in n.problems() {
                out.push((
                    format!("/notifiers/{i}/{field}"),
                    format!("{} notifier `{}`: {msg}", n.kind(), n.label()),
                ));
            }
        }
        out
    }
}

impl NotifierConfig {
    /// (field, message) for each invalid field.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self {
            NotifierConfig::Webhook { url, headers, .. } => {
                check_url(url, &mut out);
                for (k, v) in headers {
                    if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        out.push(("headers", format!("`{k}` is not a valid header name")));
                    } else if reqwest::header::HeaderValue::from_str(v).is_err() {
                        out.push((
                            "headers",
                            format!("the value of header `{k}` is not a valid header value"),
                        ));
                    }
                }
            }
            NotifierConfig::Slack { url, .. }
            | NotifierConfig::Dingtalk { url, .. }
            | NotifierConfig::Wecom { url, .. }
            | NotifierConfig::Feishu { url, .. } => check_url(url, &mut out),
            NotifierConfig::Email {
                host,
                username,
                password,
                from,
                to,
                ..
            } => {
                if host.trim().is_empty() {
                    out.push(("host", "`host` is empty".to_string()));
                }
                if password.is_some() && username.is_none() {
                    out.push((
                        "password",
                        "`password` is set but `username` is not".to_string(),
                    ));
                }
                if from.parse::<lettre::message::Mailbox>().is_err() {
                    out.push(("from", format!("`{from}` is not an email address")));
                }
                if to.is_empty() {
                    out.push(("to", "`to` names no recipient".to_string()));
                }
                for addr in to {
                    if addr.parse::<lettre::message::Mailbox>().is_err() {
                        out.push(("to", format!("`{addr}` is not an email address")));
                    }
                }
            }
        }
        out
    }

    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Webhook { .. } => "webhook",
            NotifierConfig::Slack { .. } => "slack",
            NotifierConfig::Dingtalk { .. } => "dingtalk",
            NotifierConfig::Wecom { .. } => "wecom",
            NotifierConfig::Feishu { .. } => "feishu",
            NotifierConfig::Email { .. } => "email",
        }
    }

    pub fn label(&self) -> String {
        let name = match self {
            NotifierConfig::Webhook { name, .. }
            | NotifierConfig::Slack { name, .. }
            | NotifierConfig::Dingtalk { name, .. }
            | NotifierConfig::Wecom { name, .. }
            | NotifierConfig::Feishu { name, .. }
            | NotifierConfig::Email { name, .. } => name,
        };
        name.clone().unwrap_or_else(|| self.kind().to_string())
    }

    /// Where it delivers, safe to log: the URL's origin (no path or query, which
    /// carry tokens), or the SMTP server.
    pub fn target(&self) -> String {
        match self {
            NotifierConfig::Webhook { url, .. }
            | NotifierConfig::Slack { url, .. }
            | NotifierConfig::Dingtalk { url, .. }
            | NotifierConfig::Wecom { url, .. }
            | NotifierConfig::Feishu { url, .. } => url_origin(url),
            NotifierConfig::Email {
                host, port, tls, ..
            } => {
                format!("smtp://{host}:{}", port.unwrap_or(tls.default_port()))
            }
        }
    }

    pub fn events(&self) -> &[EventKind] {
        match self {
            NotifierConfig::Webhook { events, .. }
            | NotifierConfig::Slack { events, .. }
            | NotifierConfig::Dingtalk { events, .. }
            | NotifierConfig::Wecom { events, .. }
            | NotifierConfig::Feishu { events, .. }
            | NotifierConfig::Email { events, .. } => events,
        }
    }
}

fn check_url(url: &str, out: &mut Vec<(&'static str, String)>) {
    let ok = reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        // Not quoted: the URL may carry an access token.
        out.push(("url", "`url` is not an http(s) URL".to_string()));
    }
}

/// Where a notifier delivers, for logs: scheme, host and port only (paths and
/// queries carry tokens).
fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid url)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AlertsConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    // Omitted keys take their defaults: a 1h cool-down, no notifiers, and notifiers
    // that get failures and resolutions.
    #[test]
    fn defaults() {
        assert_eq!(parse("{}").unwrap(), AlertsConfig::default());
        assert_eq!(AlertsConfig::default().cooldown.to_string(), "1h");
        let c = parse("notifiers: [{type: slack, url: 'https://h/x'}]").unwrap();
        assert_eq!(
            c.notifiers[0].events(),
            [EventKind::Failure, EventKind::Resolved]
        );
        let c = parse("notifiers: [{type: email, host: h, from: a@b.c, to: [d@e.f]}]").unwrap();
        assert!(matches!(
            c.notifiers[0],
            NotifierConfig::Email {
                tls: SmtpTls::Starttls,
                port: None,
                ..
            }
        ));
        assert_eq!(c.notifiers[0].target(), "smtp://h:587");
    }

    // Unknown keys, unknown types and unknown events are rejected, in every variant.
    #[test]
    fn unknown_keys_are_rejected() {
        assert!(parse("cooldwn: 1h").is_err());
        assert!(parse("notifiers: [{type: slack, url: 'https://h', secret: x}]").is_err());
        assert!(parse("notifiers: [{type: teams, url: 'https://h'}]").is_err());
        assert!(parse("notifiers: [{type: slack, url: 'https://h', events: [boom]}]").is_err());
        assert!(
            parse("notifiers: [{type: webhook, url: 'https://h', events: [success, runStart]}]")
                .is_ok()
        );
    }

    // Semantic problems name the field and the notifier, never the URL (it carries
    // tokens).
    #[test]
    fn problems_name_fields_not_secrets() {
        // A cool-down that is no duration never becomes a value.
        assert!(
            parse("cooldown: soon")
                .unwrap_err()
                .contains("not a duration")
        );
        let c = parse(
            "cooldown: 5m\nnotifiers:\n\
             - {type: dingtalk, name: ops, url: 'oapi.dingtalk.com/robot/send?access_token=TOKEN', secret: SECx}\n\
             - {type: webhook, url: 'https://h/x', headers: {'bad header': v}}\n\
             - {type: email, host: h, password: pw, from: nobody, to: []}\n",
        )
        .unwrap();
        let p = c.problems();
        let pointers: Vec<&str> = p.iter().map(|(ptr, _)| ptr.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/notifiers/0/url",
                "/notifiers/1/headers",
                "/notifiers/2/password",
                "/notifiers/2/from",
                "/notifiers/2/to"
            ]
        );
        assert!(p[0].1.contains("dingtalk notifier `ops`"), "{p:?}");
        let all = format!("{p:?}");
        assert!(!all.contains("TOKEN") && !all.contains("SECx") && !all.contains("pw"));
        assert!(
            parse("notifiers: [{type: slack, url: 'https://hooks.slack.com/x'}]")
                .unwrap()
                .problems()
                .is_empty()
        );
    }

    // Logs name where a notifier delivers by origin only.
    #[test]
    fn target_hides_path_and_query() {
        let c = parse(
            "notifiers: [{type: wecom, url: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY'}]",
        )
        .unwrap();
        assert_eq!(c.notifiers[0].target(), "https://qyapi.weixin.qq.com");
    }
}
