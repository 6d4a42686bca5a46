use super::*;
use rstest::rstest;

fn env(name: &str) -> Option<String> {
    match name {
        "PASS" => Some("s3cr$t".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

// Variables expand, defaults apply when unset or empty, `$$` is a literal dollar.
#[rstest]
#[case("mongodb://u:${PASS}@h/db", "mongodb://u:s3cr$t@h/db")]
#[case("${MISSING:-fallback}", "fallback")]
#[case("${EMPTY:-fallback}", "fallback")]
#[case("cost $$5", "cost $5")]
#[case("plain $ sign", "plain $ sign")]
#[case("${PASS}${PASS}", "s3cr$ts3cr$t")]
fn expands(#[case] input: &str, #[case] expected: &str) {
    assert_eq!(expand(input, &env).unwrap(), expected);
}

// An unset variable without default, or a malformed reference, is an error.
#[rstest]
#[case("${MISSING}", "not set")]
#[case("${PASS", "unterminated")]
#[case("${1X}", "not a variable")]
fn refuses(#[case] input: &str, #[case] reason: &str) {
    assert!(expand(input, &env).unwrap_err().contains(reason));
}

// Config-relative paths are joined and tidied lexically.
#[rstest]
#[case("examples/../policies", "policies")]
#[case("./a/./b", "a/b")]
#[case("../x", "../x")]
#[case("a/..", ".")]
fn normalizes(#[case] input: &str, #[case] expected: &str) {
    assert_eq!(normalize(Path::new(input)), PathBuf::from(expected));
}

// `{:?}` of the settings and of the config shows the URI redacted and never a
// password, a notifier secret, a header value or a URL's token.
#[test]
fn debug_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dcb.yaml");
    std::fs::write(
        &path,
        "mongodb:\n  uri: mongodb://backup:${PASS}@db:27017/dcMes\n\
         alerts:\n  notifiers:\n\
         \x20   - {type: dingtalk, url: 'https://oapi.dingtalk.com/robot/send?access_token=TOKEN1', secret: SECRET2}\n\
         \x20   - {type: feishu, url: 'https://open.feishu.cn/open-apis/bot/v2/hook/TOKEN3', secret: SECRET4}\n\
         \x20   - {type: email, host: smtp.example.com, username: dcb, password: SECRET5, from: a@b.cn, to: [c@d.cn]}\n\
         \x20   - {type: webhook, url: 'https://hc.example/ping/TOKEN6', headers: {Authorization: 'Bearer SECRET7'}}\n\
         \x20   - {type: slack, url: 'https://hooks.slack.com/services/TOKEN8'}\n\
         http:\n  token: TOKEN9\n",
    )
    .unwrap();
    let overrides = Overrides {
        config: Some(path),
        ..Overrides::default()
    };
    let settings = Settings::resolve(&overrides, &env).unwrap();
    let config = ConfigFile::load(overrides.config.as_deref().unwrap(), &env).unwrap();
    for shown in [
        format!("{settings:?}"),
        format!("{config:?}"),
        format!("{:?}", config.mongodb),
    ] {
        for secret in [
            "s3cr$t", "TOKEN1", "SECRET2", "TOKEN3", "SECRET4", "SECRET5", "TOKEN6", "SECRET7",
            "TOKEN8", "TOKEN9",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("mongodb://backup:***@db:27017/dcMes"),
            "{shown}"
        );
    }
    let all = format!("{settings:?}");
    assert!(all.contains("smtp://smtp.example.com:587"), "{all}");
    assert!(all.contains("Authorization"), "{all}");
}

// The admin endpoint's token: DCB_HTTP_TOKEN over `token` over `tokenFile` (read
// relative to dcb.yaml, its first line); an empty one is none.
#[test]
fn http_token_origins() {
    use super::resolve::HttpToken;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dcb.yaml");
    std::fs::write(dir.path().join("http.token"), "from-file\nsecond line\n").unwrap();
    let overrides = Overrides {
        config: Some(path.clone()),
        ..Overrides::default()
    };
    let token = |yaml: &str, env_token: Option<&str>| {
        std::fs::write(&path, yaml).unwrap();
        let env = |name: &str| match name {
            "DCB_HTTP_TOKEN" => env_token.map(str::to_owned),
            _ => None,
        };
        let t = Settings::resolve(&overrides, &env).unwrap().http_token;
        t.map(|t| t.read().unwrap())
    };
    let both = "http:\n  token: from-yaml\n  tokenFile: http.token\n";
    assert_eq!(token(both, Some("from-env")), Some(Some("from-env".into())));
    assert_eq!(token(both, None), Some(Some("from-yaml".into())));
    let file = "http:\n  tokenFile: http.token\n";
    assert_eq!(token(file, Some("")), Some(Some("from-file".into())));
    assert_eq!(token("http:\n  token: ''\n", None), None);
    assert_eq!(token("{}\n", None), None);
    assert_eq!(
        HttpToken::Value("  ".into()).read().unwrap(),
        None,
        "blank is none"
    );
}

// The URI's path names the default database; options and credentials are ignored.
#[rstest]
#[case("mongodb://127.0.0.1:27017", None)]
#[case("mongodb://127.0.0.1:27017/", None)]
#[case("mongodb://h/dcMes", Some("dcMes"))]
#[case("mongodb://u:p@h1,h2/dcMes?authSource=admin", Some("dcMes"))]
#[case(
    "mongodb+srv://u:p%2Fx@cluster.example/mes%2Dprod?tls=true",
    Some("mes-prod")
)]
#[case("mongodb://h/?directConnection=true", None)]
fn uri_databases(#[case] uri: &str, #[case] db: Option<&str>) {
    assert_eq!(uri_database(uri).as_deref(), db);
}
