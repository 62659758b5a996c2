//! The fuzz targets of `strand::fuzzing` on the stable toolchain (CI has no nightly, so no
//! cargo-fuzz there): the committed corpus (`fuzz/corpus/<target>/`, seeded from real client
//! traffic by `scripts/capture-corpus.py`) and every regression input (`fuzz/regressions/`) are
//! replayed through the targets, then mutated and random inputs run for a bounded time
//! (`STRAND_FUZZ_SECS`, default 20 s in all). A panic fails the test and names the input, which is
//! also saved under `target/fuzz-failures/`. Last, corpus frames and mutations of them are sent
//! to a running broker, which must survive them and keep serving other clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, StartOpts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strand::fuzzing::{self, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of a directory (sorted; empty when it does not exist).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).map(|p| { let b = std::fs::read(&p).unwrap(); (p, b) }).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = files(&fuzz_dir().join("corpus").join(target));
    v.extend(files(&fuzz_dir().join("regressions").join(target)));
    v
}

/// Runs one input; on a panic saves it and fails with its origin.
fn run_one(target: &str, f: fn(&[u8]), input: &[u8], origin: &str) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("fuzz-failures").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("crash-{}", fuzzing::input_name(input)));
        std::fs::write(&path, input).unwrap();
        panic!("fuzz target {target} panicked on {origin} ({} bytes), saved as {}", input.len(), path.display());
    }
}

#[test]
fn corpus_is_present_and_small() {
    let mut total = 0;
    for (t, _) in TARGETS {
        let c = corpus(t);
        assert!(!c.is_empty(), "fuzz/corpus/{t} is empty; run scripts/capture-corpus.py and derive_corpus");
        total += c.iter().map(|(_, b)| b.len()).sum::<usize>();
    }
    assert!(total < 2 << 20, "the committed corpus is {total} bytes; keep it under 2 MiB");
}

#[test]
fn replay_corpus_and_regressions() {
    let frames = corpus("frames");
    for (t, f) in TARGETS {
        for (p, b) in corpus(t) {
            run_one(t, *f, &b, &p.display().to_string());
        }
        // Every target also gets the raw frames: cheap extra variety.
        for (p, b) in &frames {
            run_one(t, *f, b, &format!("frame {}", p.display()));
            if b.len() > 4 {
                run_one(t, *f, &b[4..], &format!("frame {} without prefix", p.display()));
            }
        }
    }
    // Real client frames must parse (they came from working clients).
    let mut parsed = 0;
    for (p, b) in &frames {
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("stream-") {
            continue;
        }
        match fuzzing::request(Bytes::copy_from_slice(&b[4..])) {
            Ok(_) => parsed += 1,
            Err(e) => panic!("captured client frame {name} does not parse: {e}"),
        }
    }
    assert!(parsed > 20, "too few captured frames ({parsed})");
}

/// One mutation of `input`, AFL-style: bit flips, interesting values, inserts, deletes,
/// truncation, splices with another input.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = rng.gen();
            }
            2 if len >= 4 => {
                // An interesting 32-bit value (lengths and counts are i32 on the wire).
                const VALS: [i32; 8] = [-1, 0, 1, 0x7fff_ffff, i32::MIN, 0xffff, 0x1_0000, 255];
                let i = rng.gen_range(0..=len - 4);
                v[i..i + 4].copy_from_slice(&VALS[rng.gen_range(0..VALS.len())].to_be_bytes());
            }
            3 if len >= 2 => {
                const VALS: [i16; 6] = [-1, 0, 1, 0x7fff, i16::MIN, 0xff];
                let i = rng.gen_range(0..=len - 2);
                v[i..i + 2].copy_from_slice(&VALS[rng.gen_range(0..VALS.len())].to_be_bytes());
            }
            4 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| if rng.gen_bool(0.5) { 0xff } else { rng.gen() }).collect();
                v.splice(i..i, bytes);
            }
            5 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(32));
                v.drain(i..i + n);
            }
            6 if len > 0 => v.truncate(rng.gen_range(0..len)),
            7 if !other.is_empty() => {
                let i = rng.gen_range(0..=len);
                let j = rng.gen_range(0..other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn mutated_and_random_inputs() {
    let secs: f64 = std::env::var("STRAND_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let per_target = Duration::from_secs_f64(secs / TARGETS.len() as f64);
    let seed: u64 = std::env::var("STRAND_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("fuzz seed {seed} (STRAND_FUZZ_SEED to repeat), {per_target:?} per target");
    let mut rng = StdRng::seed_from_u64(seed);
    let frames: Vec<Vec<u8>> = corpus("frames").into_iter().map(|(_, b)| b).collect();
    for (t, f) in TARGETS {
        let mut seeds: Vec<Vec<u8>> = corpus(t).into_iter().map(|(_, b)| b).collect();
        seeds.extend(frames.iter().cloned());
        let t0 = Instant::now();
        let mut execs = 0u64;
        while t0.elapsed() < per_target {
            let input = if rng.gen_bool(0.9) {
                let a = &seeds[rng.gen_range(0..seeds.len())];
                let b = &seeds[rng.gen_range(0..seeds.len())];
                mutate(&mut rng, a, b)
            } else {
                let n = rng.gen_range(0..512);
                (0..n).map(|_| rng.gen()).collect()
            };
            run_one(t, *f, &input, &format!("a mutated input (seed {seed}, exec {execs})"));
            execs += 1;
        }
        eprintln!("{t}: {execs} inputs in {:?}", t0.elapsed());
    }
}

/// Corpus frames and mutations of them, sent to a running broker over TCP: it must not crash,
/// and a separate client must keep getting answers throughout.
#[test]
fn broker_survives_corpus_frames() {
    let mut b = Broker::start(StartOpts::default().shards(2));
    let frames: Vec<Vec<u8>> = corpus("frames").into_iter().map(|(_, b)| b).collect();
    let mut rng = StdRng::seed_from_u64(rand::thread_rng().gen());
    let mut watcher = TcpStream::connect(b.addr()).unwrap();
    watcher.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut sent: i32 = 0;
    for round in 0..4 {
        for chunk in frames.chunks(16) {
            // One connection per chunk: the frames as captured (round 0) or mutated.
            let Ok(mut s) = TcpStream::connect(b.addr()) else { panic!("broker stopped accepting") };
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            for f in chunk {
                let data = if round == 0 {
                    f.clone()
                } else {
                    let other = rng.gen_range(0..frames.len());
                    mutate(&mut rng, f, &frames[other])
                };
                if s.write_all(&data).is_err() {
                    break; // closed by the broker: bad framing
                }
                sent += 1;
            }
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
            drop(s);
            assert!(b.is_running(), "broker died after fuzz frames:\n{}", b.log_tail(40));
            // The watching client still gets answers.
            let corr = sent;
            let mut req = Vec::new();
            req.extend_from_slice(&18i16.to_be_bytes());
            req.extend_from_slice(&0i16.to_be_bytes());
            req.extend_from_slice(&corr.to_be_bytes());
            req.extend_from_slice(&(-1i16).to_be_bytes());
            let mut frame = (req.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&req);
            watcher.write_all(&frame).unwrap();
            let mut head = [0u8; 8];
            watcher.read_exact(&mut head).expect("watcher connection answered");
            assert_eq!(i32::from_be_bytes(head[4..8].try_into().unwrap()), corr);
            let mut rest = vec![0u8; i32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 4];
            watcher.read_exact(&mut rest).unwrap();
        }
    }
    eprintln!("sent {sent} frames in {:?}", t0.elapsed());
    assert!(common::probe_api_versions(b.addr()));
}
