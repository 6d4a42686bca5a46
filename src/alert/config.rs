//! The `alerts:` section of dcb.yaml.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration;

/// Alerting: where findings go and how often they may repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsConfig {
    /// The same alert is not repeated more often than this.
    #[serde(default = "default_cooldown")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub cooldown: String,

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

fn default_cooldown() -> String {
    "1h".into()
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

impl NotifierConfig {
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
