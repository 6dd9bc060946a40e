//! Text extraction in worker processes of the real binary: a document that makes a worker
//! overrun its time or its memory costs only that worker; the pool answers the next
//! document from a fresh one, and the failed document carries the reason.

mod support;

use artstore_extract::Limits;
use artstore_query::doc::Extraction;
use artstore_query::extractor::{Extractor, ExtractorConfig};
use std::time::Duration;

fn pool(timeout: Duration, memory_mib: u64, limits: Limits) -> Extractor {
    Extractor::processes(ExtractorConfig {
        program: support::BIN.into(),
        args: vec!["query".into(), "extract-worker".into()],
        workers: 2,
        timeout,
        memory_bytes: memory_mib << 20,
        limits,
    })
}

fn text_of(e: &Extraction) -> &str {
    match e {
        Extraction::Ok { text, .. } => text,
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_extract_and_survive_timeouts_and_memory_exhaustion() {
    // Room enough that the slow document can only run out of time, never of memory first
    // (which one comes first would otherwise depend on the machine's speed).
    let p = pool(Duration::from_millis(300), 2048, Limits::default());
    let ok = p.extract("Договор поставки".as_bytes().to_vec().into(), "text/plain", "a.txt").await;
    assert_eq!(text_of(&ok), "Договор поставки");

    // A document that takes far longer than the time limit: the worker is killed.
    let html = format!("<html><body>{}</body></html>", "<p>word <b>bold</b> <i>it</i></p>".repeat(400_000));
    let slow = p.extract(html.into_bytes().into(), "text/html", "big.html").await;
    match &slow {
        Extraction::Failed { reason } => assert!(reason.contains("longer than"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(p.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed), 1);
    let again = p.extract(b"still here".to_vec().into(), "text/plain", "b.txt").await;
    assert_eq!(text_of(&again), "still here");

    // A worker whose address space is too small for the document dies; the next one works.
    let small = pool(Duration::from_secs(20), 150, Limits { max_text_bytes: 512 << 20, ..Limits::default() });
    let big = "слово ".repeat(9_000_000).into_bytes();
    let died = small.extract(big.into(), "text/plain", "huge.txt").await;
    match &died {
        Extraction::Failed { reason } => assert!(reason.contains("crashed"), "{reason}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    let after = small.extract(b"fine".to_vec().into(), "text/plain", "c.txt").await;
    assert_eq!(text_of(&after), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_fail_with_a_reason() {
    let p = pool(Duration::from_secs(20), 2048, Limits { max_unpacked_bytes: 10 << 20, ..Limits::default() });
    // A DOCX whose document.xml unpacks to 200 MB.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write as _;
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("[Content_Types].xml", o).unwrap();
        z.write_all(b"<Types/>").unwrap();
        z.start_file("word/document.xml", o).unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..200 {
            z.write_all(&chunk).unwrap();
        }
        z.finish().unwrap();
    }
    let bomb = p
        .extract(
            buf.into_inner().into(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "bomb.docx",
        )
        .await;
    match &bomb {
        Extraction::Failed { reason } => assert!(reason.contains("unpacks to more than"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let pdf = p.extract(b"%PDF-1.4\n1 0 obj garbage".to_vec().into(), "application/pdf", "broken.pdf").await;
    assert!(matches!(pdf, Extraction::Failed { .. }), "{pdf:?}");
    let bin: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let blob = p.extract(bin.into(), "text/plain", "blob.txt").await;
    match &blob {
        Extraction::Failed { reason } => assert!(reason.contains("binary"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let img = p.extract(vec![0x89, b'P', b'N', b'G'].into(), "image/png", "x.png").await;
    assert!(matches!(img, Extraction::Skipped { .. }), "{img:?}");
}
