//! The page's languages: which one a browser asks for (`Accept-Language`), and every
//! visible string, one table per language.

/// A language the page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The language for an `Accept-Language` header: the acceptable tag with the
    /// highest q-value (the first among equals) that is Chinese (`zh*`) or English
    /// (`en*`, `*`); English when none is.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.unwrap_or_default().split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "zh" || tag.starts_with("zh-") || tag.starts_with("zh_") {
                Lang::Zh
            } else if tag == "en" || tag.starts_with("en-") || tag == "*" {
                Lang::En
            } else {
                continue;
            };
            if q.is_finite() && q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    /// The value of `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// Every visible string of the page in this language.
    pub fn text(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// The visible strings of the page.
pub struct Text {
    pub title: &'static str,
    pub generated: &'static str,
    pub times_in: &'static str,
    pub refreshes: &'static str,
    pub service_running: &'static str,
    pub service_stopped: &'static str,
    pub alerts: &'static str,
    pub no_alerts: &'static str,
    pub since: &'static str,
    pub disk: &'static str,
    pub disk_unknown: &'static str,
    pub free_of: &'static str,
    pub used_by_backups: &'static str,
    pub growth: &'static str,
    pub per_day: &'static str,
    pub days_until_full: &'static str,
    pub no_growth: &'static str,
    pub policy: &'static str,
    pub disabled: &'static str,
    pub schedule: &'static str,
    pub next_run: &'static str,
    pub last_run: &'static str,
    pub never: &'static str,
    pub ok: &'static str,
    pub failed: &'static str,
    pub restorable: &'static str,
    pub as_it_was: &'static str,
    pub documents_of_windows: &'static str,
    pub nothing_yet: &'static str,
    pub gap: &'static str,
    pub until_now: &'static str,
    pub failed_window: &'static str,
    pub archive: &'static str,
    pub archives: &'static str,
    pub consecutive_failures: &'static str,
    pub last_error: &'static str,
    pub legend_archive: &'static str,
    pub legend_gap: &'static str,
    pub legend_failed: &'static str,
    pub documents_per_run: &'static str,
    pub bytes_per_run: &'static str,
    pub no_runs: &'static str,
    pub drills: &'static str,
    pub no_drills: &'static str,
    pub verifications: &'static str,
    pub no_verifications: &'static str,
    pub time: &'static str,
    pub result: &'static str,
    pub database: &'static str,
    pub collections: &'static str,
    pub elapsed: &'static str,
    pub problems: &'static str,
    pub size: &'static str,
    pub no_policies: &'static str,
}

pub static EN: Text = Text {
    title: "dcb backups",
    generated: "Generated",
    times_in: "times in",
    refreshes: "refreshes every minute",
    service_running: "service running",
    service_stopped: "service not running",
    alerts: "Active alerts",
    no_alerts: "No active alerts.",
    since: "since",
    disk: "Disk",
    disk_unknown: "The free space of the backup disk is not known.",
    free_of: "free of",
    used_by_backups: "used by backups",
    growth: "Growth (last 7 days, before retention)",
    per_day: "per day",
    days_until_full: "days until full at that rate",
    no_growth: "no growth measured",
    policy: "Policy",
    disabled: "disabled",
    schedule: "schedule",
    next_run: "Next run",
    last_run: "Last run",
    never: "never",
    ok: "ok",
    failed: "failed",
    restorable: "Restorable",
    as_it_was: "as it was",
    documents_of_windows: "the documents of the windows",
    nothing_yet: "nothing yet",
    gap: "Gap",
    until_now: "now",
    failed_window: "Failed run",
    archive: "archive",
    archives: "archives",
    consecutive_failures: "consecutive failures",
    last_error: "Last error",
    legend_archive: "archive",
    legend_gap: "gap",
    legend_failed: "failed run",
    documents_per_run: "Documents per run",
    bytes_per_run: "Bytes per run",
    no_runs: "no archives yet",
    drills: "Latest restore drills",
    no_drills: "No drills recorded yet.",
    verifications: "Latest verifications",
    no_verifications: "No verifications recorded yet.",
    time: "Time",
    result: "Result",
    database: "Database",
    collections: "Collections",
    elapsed: "Elapsed",
    problems: "Problems",
    size: "Size",
    no_policies: "No valid policies.",
};

pub static ZH: Text = Text {
    title: "dcb 备份状态",
    generated: "生成于",
    times_in: "时区",
    refreshes: "每分钟自动刷新",
    service_running: "服务运行中",
    service_stopped: "服务未运行",
    alerts: "当前告警",
    no_alerts: "没有告警。",
    since: "始于",
    disk: "磁盘",
    disk_unknown: "无法获取备份磁盘的剩余空间。",
    free_of: "可用,总共",
    used_by_backups: "备份占用",
    growth: "增长(最近 7 天,未计清理)",
    per_day: "每天",
    days_until_full: "天后磁盘将满(按此速度)",
    no_growth: "尚无增长数据",
    policy: "策略",
    disabled: "已停用",
    schedule: "计划",
    next_run: "下次运行",
    last_run: "上次运行",
    never: "从未",
    ok: "成功",
    failed: "失败",
    restorable: "可恢复范围",
    as_it_was: "集合原样",
    documents_of_windows: "各时间窗口内的文档",
    nothing_yet: "暂无备份",
    gap: "缺口",
    until_now: "现在",
    failed_window: "失败的运行",
    archive: "备份文件",
    archives: "个备份文件",
    consecutive_failures: "次连续失败",
    last_error: "最近错误",
    legend_archive: "备份文件",
    legend_gap: "缺口",
    legend_failed: "失败的运行",
    documents_per_run: "每次运行的文档数",
    bytes_per_run: "每次运行的字节数",
    no_runs: "暂无备份文件",
    drills: "最近的恢复演练",
    no_drills: "尚无恢复演练记录。",
    verifications: "最近的校验",
    no_verifications: "尚无校验记录。",
    time: "时间",
    result: "结果",
    database: "数据库",
    collections: "集合",
    elapsed: "耗时",
    problems: "问题",
    size: "大小",
    no_policies: "没有有效的策略。",
};

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Chinese for zh* (any region), English otherwise; the q-values decide between
    // them; a q of 0 refuses a language.
    #[rstest]
    #[case(None, Lang::En)]
    #[case(Some(""), Lang::En)]
    #[case(Some("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh)]
    #[case(Some("zh-TW"), Lang::Zh)]
    #[case(Some("ZH"), Lang::Zh)]
    #[case(Some("en-US,en;q=0.9"), Lang::En)]
    #[case(Some("en;q=0.5, zh;q=0.9"), Lang::Zh)]
    #[case(Some("fr-FR, zh;q=0.3"), Lang::Zh)]
    #[case(Some("fr-FR, de"), Lang::En)]
    #[case(Some("zh;q=0, en"), Lang::En)]
    #[case(Some("*;q=0.5, zh-CN;q=0.4"), Lang::En)]
    #[case(Some("zh;q=abc"), Lang::Zh)]
    fn chooses_the_language(#[case] header: Option<&str>, #[case] lang: Lang) {
        assert_eq!(Lang::from_accept_language(header), lang);
    }
}
