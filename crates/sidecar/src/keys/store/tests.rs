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

#[tokio::test]
async fn jwks_files_are_read_through_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, vec![b'x'; 100]).unwrap();
    assert_eq!(read_limited(&path, 100).await.unwrap().0.len(), 100);
    assert!(matches!(
        read_limited(&path, 99).await,
        Err(FetchError::TooLarge(99))
    ));
    // A file whose size says nothing (a pipe fed without end) is cut at the limit instead
    // of being read whole.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let chunk = [b'x'; 4096];
                while f.write_all(&chunk).is_ok() {}
            }
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(10), read_limited(&fifo, 64 * 1024))
        .await
        .expect("bounded read finishes");
    assert!(matches!(result, Err(FetchError::TooLarge(_))));
    writer.join().unwrap();
}
