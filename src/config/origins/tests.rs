use super::*;

// Credentials are hidden by the name of their key, URIs lose their password and
// URLs their path; paths named by `…File` are shown.
#[test]
fn hides_by_key() {
    let h = |k: &str, v: Value| hide(k, v);
    assert_eq!(
        h("alerts.notifiers.0.password", json!("pw1-Q7")),
        json!("***")
    );
    assert_eq!(
        h("alerts.notifiers.0.secret", json!("SEC-Q7")),
        json!("***")
    );
    assert_eq!(h("http.token", json!("page-token-Q7")), json!("***"));
    assert_eq!(h("storage.s3.secretAccessKey", json!("k")), json!("***"));
    assert_eq!(h("targets.b.accessKeyId", json!("AKID-Q7")), json!("***"));
    assert_eq!(
        h("targets.b.secretAccessKeyEnv", json!("MY_SECRET")),
        json!("MY_SECRET")
    );
    assert_eq!(
        h(
            "alerts.notifiers.1.headers.Authorization",
            json!("Bearer x")
        ),
        json!("***")
    );
    assert_eq!(
        h("mongodb.passwordFile", json!("/etc/dcb/pw")),
        json!("/etc/dcb/pw")
    );
    assert_eq!(
        h("mongodb.uri", json!("mongodb://u:p4ss@h/db")),
        json!("mongodb://u:***@h/db")
    );
    assert_eq!(
        h(
            "alerts.notifiers.0.url",
            json!("https://oapi.dingtalk.com/robot/send?access_token=T")
        ),
        json!("https://oapi.dingtalk.com/***")
    );
    assert_eq!(
        h("alerts.notifiers.0.url", json!("https://h.example")),
        json!("https://h.example")
    );
    assert_eq!(
        h("something.else", json!("mongodb://u:p4ss@h/db")),
        json!("mongodb://u:***@h/db")
    );
    assert_eq!(h("alerts.notifiers.0.password", Value::Null), Value::Null);
}

// Only variable names are reported, never a `${VAR:-default}`'s default.
#[test]
fn finds_references() {
    let mut out = Vec::new();
    references(
        &json!(["a ${ONE} $$ ${TWO:-dflt} ${ONE}", {"k": "${THREE}"}]),
        &mut out,
    );
    assert_eq!(out, ["ONE", "TWO", "THREE"]);
}

#[test]
fn dotted_keys() {
    assert_eq!(dotted("/alerts/notifiers/0/url"), "alerts.notifiers.0.url");
    assert_eq!(dotted("/health/minFreeMB"), "health.minFreeMB");
}
