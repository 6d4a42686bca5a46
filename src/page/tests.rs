use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn page() -> Page {
    let bar = |name: &str, from: Option<&str>, to: &str| ArchiveBar {
        name: name.into(),
        from: from.map(t),
        to: t(to),
        finished_at: t(to),
        documents: 10,
        bytes: 1000,
    };
    Page {
        now: t("2026-12-01T12:00:00Z"),
        timezone: Tz::Asia__Shanghai,
        running: true,
        policies: vec![PolicyView {
            name: "hot<1>".into(),
            enabled: true,
            schedule: "0 * * * *".into(),
            timezone: "UTC".into(),
            next_run: Some(t("2026-12-01T13:00:00Z")),
            collections: vec![CollectionView {
                database: "db".into(),
                collection: "api_logs".into(),
                restorable_from: Some(t("2026-12-01T08:00:00Z")),
                restorable_to: Some(t("2026-12-01T11:00:00Z")),
                last_success: Some(t("2026-12-01T11:00:00Z")),
                last_failure: Some(t("2026-12-01T11:30:00Z")),
                last_error: Some("<script>x</script>".into()),
                consecutive_failures: 1,
                archives: vec![
                    bar(
                        "a.tar.gz",
                        Some("2026-12-01T08:00:00Z"),
                        "2026-12-01T09:00:00Z",
                    ),
                    bar(
                        "c.tar.gz",
                        Some("2026-12-01T10:00:00Z"),
                        "2026-12-01T11:00:00Z",
                    ),
                ],
                gaps: vec![Span {
                    from: Some(t("2026-12-01T09:00:00Z")),
                    to: Some(t("2026-12-01T10:00:00Z")),
                    reason: "no archive holds this window".into(),
                }],
                failed: vec![Span {
                    from: Some(t("2026-12-01T11:00:00Z")),
                    to: Some(t("2026-12-01T11:30:00Z")),
                    reason: "server unreachable".into(),
                }],
                ..Default::default()
            }],
        }],
        disk: Some(DiskView {
            available: 50_000_000_000,
            total: 100_000_000_000,
            used_by_backups: 2000,
            growth_per_day: Some(1e9),
        }),
        alerts: vec![AlertView {
            key: "failures:hot/db/api_logs".into(),
            title: Some("3 consecutive failures".into()),
            since: None,
        }],
        drills: vec![],
        verifications: vec![],
    }
}

// The page names the collection, marks the gap and the failed window with their
// times, states the restorable range in the display zone, and escapes data.
#[test]
fn renders_timeline_gap_failure_and_range() {
    let html = render(&page(), Lang::En);
    assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"60\">"));
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("data-collection=\"api_logs\""));
    let gap = &html[html.find("<rect class=\"gap\"").expect("a gap")..];
    let gap = &gap[..gap.find('>').unwrap()];
    assert!(
        gap.contains("data-from=\"2026-12-01T09:00:00Z\" data-to=\"2026-12-01T10:00:00Z\""),
        "{gap}"
    );
    assert!(html.contains("class=\"failed\""));
    // Shown in Asia/Shanghai, UTC+8.
    assert!(
        html.contains("2026-12-01 16:00:00 .. 2026-12-01 19:00:00"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("hot&lt;1&gt;"));
    assert!(html.contains("data-days=\"50.0\""));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing fetched"
    );
}

// The Chinese page has its own strings and none of the English ones.
#[test]
fn renders_chinese() {
    let html = render(&page(), Lang::Zh);
    assert!(html.contains("lang=\"zh-CN\""));
    for s in ["可恢复范围", "缺口", "失败的运行", "当前告警", "下次运行"] {
        assert!(html.contains(s), "{s}");
    }
    for s in ["Restorable", "Next run", "Active alerts"] {
        assert!(!html.contains(s), "{s}");
    }
}
