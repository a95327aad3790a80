use super::*;

#[test]
fn max_age_parsing() {
    assert_eq!(
        max_age("public, max-age=300"),
        Some(Duration::from_secs(300))
    );
    assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
    assert_eq!(max_age("no-store"), Some(Duration::ZERO));
    assert_eq!(max_age("max-age=60, no-cache"), Some(Duration::ZERO));
    assert_eq!(max_age("public"), None);
    assert_eq!(max_age("max-age=soon"), None);
}

#[test]
fn retry_delay_grows_and_is_capped() {
    let max = Duration::from_secs(60);
    for failures in 1..40 {
        let d = retry_delay(failures, max);
        let base = Duration::from_secs(1u64 << (failures - 1).min(16)).min(max);
        assert!(
            d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
            "{failures}: {d:?}"
        );
    }
    assert!(retry_delay(30, max) <= Duration::from_secs(72));
}
