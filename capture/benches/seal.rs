//! Seal and open throughput of a 256 MiB stream, next to the `age` crate
//! encrypting and decrypting the same bytes to one X25519 recipient with its
//! streaming API, in the same run.
//!
//! Both sides write to `io::sink()` and read from memory, through 1 MiB
//! `write_all`/`read` calls, so the figures are the cost of the
//! construction (key wrap, chunking, AEAD, copies), not of a disk.
//!
//! `cargo bench -p jam-capture --bench seal`; `JAM_BENCH_SEAL_MIB` changes
//! the stream size (default 256). After criterion's runs, 7 interleaved
//! rounds (jam, age, jam, age, ...) print the ratio to age; set
//! `JAM_BENCH_RATIO=0` to skip them. Listing (`--list`) and test mode
//! (`cargo test --benches`) set nothing up beyond 1 MiB and print nothing.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::iter;
use std::sync::LazyLock;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use jam_capture::{Identity, Kind, Opener, SealWriter};
use rand::SeedableRng;

/// Bytes per `write_all` / `read` call.
const IO_BLOCK: usize = 1 << 20;

fn size() -> usize {
    if !jam_tests::bench::measuring() {
        return 1 << 20;
    }
    std::env::var("JAM_BENCH_SEAL_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(256)
        << 20
}

/// Incompressible-looking test data, generated cheaply (xorshift).
fn data(len: usize) -> Vec<u8> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn jam_seal(plain: &[u8], to: &jam_capture::Recipient, rng: &mut rand::rngs::StdRng) -> usize {
    let mut w = SealWriter::new(io::sink(), Kind::Agent, &[*to], rng).unwrap();
    for block in plain.chunks(IO_BLOCK) {
        w.write_all(block).unwrap();
    }
    w.finish().unwrap();
    plain.len()
}

fn age_seal(plain: &[u8], to: &age::x25519::Recipient) -> usize {
    let mut w = age::Encryptor::with_recipients(iter::once(to as &dyn age::Recipient))
        .unwrap()
        .wrap_output(io::sink())
        .unwrap();
    for block in plain.chunks(IO_BLOCK) {
        w.write_all(block).unwrap();
    }
    w.finish().unwrap();
    plain.len()
}

fn drain(mut r: impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        match r.read(buf).unwrap() {
            0 => return n,
            k => {
                black_box(&buf[..k]);
                n += k;
            }
        }
    }
}

fn jam_open(file: &[u8], id: &Identity, buf: &mut [u8]) -> usize {
    drain(
        Opener::new(file, std::slice::from_ref(id))
            .unwrap()
            .into_reader(),
        buf,
    )
}

fn age_open(file: &[u8], id: &age::x25519::Identity, buf: &mut [u8]) -> usize {
    let d = age::Decryptor::new_buffered(file).unwrap();
    drain(
        d.decrypt(iter::once(id as &dyn age::Identity)).unwrap(),
        buf,
    )
}

/// The stream and both sides' keys and sealed files, made once, on first
/// use (so that listing the benchmarks costs nothing).
struct Setup {
    plain: Vec<u8>,
    jam_id: Identity,
    jam_to: jam_capture::Recipient,
    age_id: age::x25519::Identity,
    age_to: age::x25519::Recipient,
    jam_file: Vec<u8>,
    age_file: Vec<u8>,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let len = size();
    let plain = data(len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let jam_id = Identity::generate(&mut rng);
    let jam_to = jam_id.to_public();
    let age_id = age::x25519::Identity::generate();
    let age_to = age_id.to_public();
    let mut jam_file = Vec::new();
    let mut w = SealWriter::new(&mut jam_file, Kind::Agent, &[jam_to], &mut rng).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    let mut age_file = Vec::new();
    let mut w = age::Encryptor::with_recipients(iter::once(&age_to as &dyn age::Recipient))
        .unwrap()
        .wrap_output(&mut age_file)
        .unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    // Both sides give back exactly the plaintext before anything is timed.
    let mut check = Vec::with_capacity(len);
    Opener::new(&jam_file[..], std::slice::from_ref(&jam_id))
        .unwrap()
        .into_reader()
        .read_to_end(&mut check)
        .unwrap();
    assert!(check == plain, "jam round trip");
    check.clear();
    age::Decryptor::new_buffered(&age_file[..])
        .unwrap()
        .decrypt(iter::once(&age_id as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut check)
        .unwrap();
    assert!(check == plain, "age round trip");
    Setup {
        plain,
        jam_id,
        jam_to,
        age_id,
        age_to,
        jam_file,
        age_file,
    }
});

fn bench(c: &mut Criterion) {
    let len = size();
    let mib = len >> 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut buf = vec![0u8; IO_BLOCK];

    let mut g = c.benchmark_group(format!("seal_{mib}MiB"));
    g.throughput(Throughput::Bytes(len as u64));
    // One pass takes a few hundred ms: one pass per sample.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("jam", |b| {
        let s = &*SETUP;
        b.iter(|| jam_seal(&s.plain, &s.jam_to, &mut rng))
    });
    g.bench_function("age", |b| {
        let s = &*SETUP;
        b.iter(|| age_seal(&s.plain, &s.age_to))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("open_{mib}MiB"));
    g.throughput(Throughput::Bytes(len as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("jam", |b| {
        let s = &*SETUP;
        b.iter(|| jam_open(&s.jam_file, &s.jam_id, &mut buf))
    });
    g.bench_function("age", |b| {
        let s = &*SETUP;
        b.iter(|| age_open(&s.age_file, &s.age_id, &mut buf))
    });
    g.finish();
}

/// The interleaved rounds and the ratio to age.
fn ratio() {
    let s = &*SETUP;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut buf = vec![0u8; IO_BLOCK];
    let mut rounds = Rounds::default();
    for _ in 0..RATIO_ROUNDS {
        rounds
            .jam_seal
            .push(secs(|| jam_seal(&s.plain, &s.jam_to, &mut rng)));
        rounds.age_seal.push(secs(|| age_seal(&s.plain, &s.age_to)));
        rounds
            .jam_open
            .push(secs(|| jam_open(&s.jam_file, &s.jam_id, &mut buf)));
        rounds
            .age_open
            .push(secs(|| age_open(&s.age_file, &s.age_id, &mut buf)));
    }
    rounds.print(size() >> 20);
}

/// Rounds of the interleaved ratio measurement.
const RATIO_ROUNDS: usize = 7;

fn secs(f: impl FnOnce() -> usize) -> f64 {
    let s = std::time::Instant::now();
    black_box(f());
    s.elapsed().as_secs_f64()
}

/// Seconds per run of each side, from interleaved rounds (jam, age, jam,
/// age, ...) so that load from other processes hits both sides alike.
#[derive(Default)]
struct Rounds {
    jam_seal: Vec<f64>,
    age_seal: Vec<f64>,
    jam_open: Vec<f64>,
    age_open: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Rounds {
    fn print(mut self, mib: usize) {
        let js = median(&mut self.jam_seal);
        let as_ = median(&mut self.age_seal);
        let jo = median(&mut self.jam_open);
        let ao = median(&mut self.age_open);
        let rate = |s: f64| mib as f64 / s;
        println!("interleaved medians of {RATIO_ROUNDS} rounds, {mib} MiB:");
        println!(
            "  seal: jam {:.0} MiB/s, age {:.0} MiB/s, jam/age = {:.2}x",
            rate(js),
            rate(as_),
            as_ / js
        );
        println!(
            "  open: jam {:.0} MiB/s, age {:.0} MiB/s, jam/age = {:.2}x",
            rate(jo),
            rate(ao),
            ao / jo
        );
        println!(
            "  seal+open: jam {:.0} MiB/s, age {:.0} MiB/s, jam/age = {:.2}x",
            rate(js + jo),
            rate(as_ + ao),
            (as_ + ao) / (js + jo)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    if jam_tests::bench::measuring() && std::env::var("JAM_BENCH_RATIO").as_deref() != Ok("0") {
        ratio();
    }
    Criterion::default().configure_from_args().final_summary();
}
