//! Regenerates the derived fuzz corpora (request_header, request_body, record_batch) from the
//! frames captured by `scripts/capture-corpus.py`:
//!
//!     cargo run --release --example derive_corpus

fn main() -> std::io::Result<()> {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    let written = strand::fuzzing::derive_corpus(&corpus)?;
    println!("derive_corpus: wrote {written} files under {}", corpus.display());
    Ok(())
}
