//! Seal and open throughput at 256 B, 1 KiB and 64 KiB in encrypt and sign mode.
//!
//! Opening is measured on the cache-hit path, which is what every message but the first
//! under a data key takes. `scripts/bench-envelope.sh` runs this beside `openssl speed`.
//!
//! Futures are driven by `futures::executor::block_on`, whose per-call cost is a few
//! nanoseconds; a Tokio runtime's `block_on` would add about 150 ns of harness to every
//! iteration that no awaiting task pays. The caller's attribute map is built, and the
//! result dropped, outside the timed region (`iter_batched`): both belong to the
//! caller, as they do for `openssl speed`.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use pubsub_envelope::kms::local::{Keyring, LocalKms};
use pubsub_envelope::{Attributes, KeyName, Mode, Opener, Sealer, TrustedKeys};

const SIZES: [usize; 3] = [256, 1024, 64 * 1024];

/// Opened messages kept per timed batch, dropped after it. A small batch, because the
/// memory a batch keeps is fresh: in batches of up to a million results (criterion's
/// `iter_with_large_drop`), every open's allocations page-faulted in new heap, about a
/// tenth of the time measured at 1 KiB, which no caller that drops what it has read
/// pays. (Sealing keeps criterion's large batches: at 64 KiB, small ones measured a
/// fifth slower, the allocator handing its heap back and faulting it in every batch.)
const OPENED_PER_BATCH: u64 = 64;

fn lorem(size: usize) -> Vec<u8> {
    b"lorem ipsum dolor sit amet consectetur adipisci velit ".iter().copied().cycle().take(size).collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let key: KeyName = "projects/p/locations/l/keyRings/r/cryptoKeys/k".parse().unwrap();
    let mut keyring = Keyring::load_or_new(&path).unwrap();
    keyring.create(&key).unwrap();
    keyring.save().unwrap();
    let kms = Arc::new(LocalKms::open(&path).unwrap());
    let attributes: Attributes = [("epoch_time".to_owned(), "1541340000".to_owned())].into();

    for mode in [Mode::Encrypt, Mode::Sign] {
        let mut sealer = match mode {
            Mode::Encrypt => Sealer::encrypt(kms.clone(), key.clone(), "tenantKey"),
            _ => Sealer::sign(kms.clone(), key.clone(), "tenantKey"),
        };
        let trusted = TrustedKeys::from_patterns([key.as_str()]).unwrap();
        let opener = Opener::builder("tenantKey", trusted).kms(kms.clone()).build().unwrap();
        let mut seal_group = c.benchmark_group(format!("seal/{mode}"));
        for size in SIZES {
            let data = Bytes::from(lorem(size));
            seal_group.throughput(Throughput::Bytes(size as u64));
            seal_group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
                b.iter_batched(
                    || attributes.clone(),
                    |attributes| block_on(sealer.seal(data.clone(), attributes)).unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
        seal_group.finish();

        let mut open_group = c.benchmark_group(format!("open/{mode}"));
        for size in SIZES {
            let sealed = block_on(sealer.seal(Bytes::from(lorem(size)), attributes.clone())).unwrap();
            let data = sealed.data.clone();
            block_on(opener.open(&data, &sealed.attributes)).unwrap();
            open_group.throughput(Throughput::Bytes(size as u64));
            open_group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
                b.iter_batched(
                    || (),
                    |()| block_on(opener.open(data, &sealed.attributes)).unwrap(),
                    BatchSize::NumIterations(OPENED_PER_BATCH),
                );
            });
        }
        open_group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
