//! Human durations (`90s`, `15m`, `6h`, `7d`, `1h30m`) as policies and config write them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The JSON-schema pattern a duration string must match.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h|d|w))+$";
/// A start back in time (`window.initial`): `today`, `all`, or a duration.
pub const INITIAL_PATTERN: &str = "^(today|all|([0-9]+(ms|s|m|h|d|w))+)$";

/// How often a full export is made (`full`): a duration, or `never`.
pub const FULL_PATTERN: &str = "^(never|([0-9]+(ms|s|m|h|d|w))+)$";

/// A span of time written as one or more `<number><unit>` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a duration: write a number and a unit, e.g. 90s, 15m, 6h, 7d")]
    Syntax(String),
    #[error("unknown unit `{unit}` in `{input}`: use ms, s, m, h, d or w")]
    Unit { input: String, unit: String },
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

impl HumanDuration {
    pub fn as_std(self) -> Duration {
        self.0
    }

    pub fn as_chrono(self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(DurationError::Syntax(input.to_owned()));
            }
            let (num, tail) = rest.split_at(digits);
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            if unit_len == 0 {
                return Err(DurationError::Syntax(input.to_owned()));
            }
            let (unit, tail) = tail.split_at(unit_len);
            let millis_per: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                _ => {
                    return Err(DurationError::Unit {
                        input: input.to_owned(),
                        unit: unit.to_owned(),
                    });
                }
            };
            let n: u128 = num
                .parse()
                .map_err(|_| DurationError::Overflow(input.to_owned()))?;
            total = n
                .checked_mul(millis_per)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| DurationError::Overflow(input.to_owned()))?;
            rest = tail;
        }
        // Cap at what chrono can represent so date arithmetic never overflows.
        if total > chrono::TimeDelta::MAX.num_milliseconds() as u128 / 2 {
            return Err(DurationError::Overflow(input.to_owned()));
        }
        Ok(HumanDuration(Duration::from_millis(total as u64)))
    }
}

// In files, a duration is its string form; one that does not parse never becomes a
// value, so nothing downstream parses it again.
impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HumanDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": PATTERN})
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Every unit the policies use parses to the right length, combinations add up.
    #[rstest]
    #[case("90s", 90_000)]
    #[case("15m", 900_000)]
    #[case("6h", 21_600_000)]
    #[case("7d", 604_800_000)]
    #[case("2w", 1_209_600_000)]
    #[case("1h30m", 5_400_000)]
    #[case("250ms", 250)]
    #[case("0s", 0)]
    fn parses(#[case] input: &str, #[case] millis: u64) {
        assert_eq!(
            input.parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(millis)
        );
    }

    // Malformed strings are errors, never panics or silent zeros.
    #[rstest]
    #[case("")]
    #[case("7")]
    #[case("d")]
    #[case("7 d")]
    #[case("7y")]
    #[case("-1h")]
    #[case("1.5h")]
    #[case("99999999999999999999999999999d")]
    fn rejects(#[case] input: &str) {
        assert!(input.parse::<HumanDuration>().is_err(), "{input} parsed");
    }

    // Display is the canonical form and parses back to the same value.
    #[rstest]
    #[case("90s", "1m30s")]
    #[case("72h", "3d")]
    #[case("1h30m", "1h30m")]
    fn displays(#[case] input: &str, #[case] shown: &str) {
        let d: HumanDuration = input.parse().unwrap();
        assert_eq!(d.to_string(), shown);
        assert_eq!(shown.parse::<HumanDuration>().unwrap(), d);
    }
}
