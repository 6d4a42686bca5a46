use super::*;

// Near-misses of a field name suggest the real one; unrelated words suggest nothing.
#[test]
fn suggests_close_names() {
    let known: Vec<String> = ["timeField", "schedule", "retention"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        did_you_mean("timefield", &known).as_deref(),
        Some("timeField")
    );
    assert_eq!(did_you_mean("schedul", &known).as_deref(), Some("schedule"));
    assert_eq!(
        did_you_mean("retension", &known).as_deref(),
        Some("retention")
    );
    assert_eq!(did_you_mean("banana", &known), None);
}
