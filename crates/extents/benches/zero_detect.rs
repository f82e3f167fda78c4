//! Microbenchmark of the zero detector (`cargo bench -p sparsekit-extents
//! --bench zero_detect`, also run by `cargo xtask bench zero`).
//!
//! Compares `is_zero` on an all-zero buffer (the worst case: every byte is
//! read) with a naive byte loop and with a memory-bandwidth reference (a
//! `memcpy` of the same size reads and writes each byte once), and times
//! `zero_runs` at 4 KiB granularity.

use sparsekit_extents::{is_zero, zero_runs};
use std::hint::black_box;
use std::time::Instant;

const SIZE: usize = 256 << 20;
const ROUNDS: usize = 8;

fn gib_per_s(bytes: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up (page faults)
    let t = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    (bytes * ROUNDS) as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

fn main() {
    let zeros = vec![0u8; SIZE];
    let mut dst = vec![1u8; SIZE];
    let memcpy = gib_per_s(SIZE, || {
        black_box(&mut dst[..]).copy_from_slice(black_box(&zeros));
    });
    let fast = gib_per_s(SIZE, || assert!(is_zero(black_box(&zeros))));
    let naive = gib_per_s(SIZE, || assert!(black_box(&zeros).iter().all(|&b| b == 0)));
    let runs = gib_per_s(SIZE, || {
        assert_eq!(zero_runs(black_box(&zeros), 4096).count(), 1)
    });
    let mut data = vec![0u8; SIZE];
    for b in data.chunks_mut(4096) {
        b[0] = 1;
    }
    let data_blocks = gib_per_s(SIZE, || {
        assert_eq!(zero_runs(black_box(&data), 4096).count(), 1)
    });
    println!(
        "zero detector over {} MiB, best of {ROUNDS} rounds",
        SIZE >> 20
    );
    println!(
        "{:<40} {:>8.1} GiB/s",
        "memcpy (bandwidth reference)", memcpy
    );
    println!(
        "{:<40} {:>8.1} GiB/s  ({:.2}x memcpy)",
        "is_zero, all-zero buffer",
        fast,
        fast / memcpy
    );
    println!(
        "{:<40} {:>8.1} GiB/s  ({:.2}x is_zero)",
        "naive iter().all()",
        naive,
        naive / fast
    );
    println!("{:<40} {:>8.1} GiB/s", "zero_runs 4 KiB, all zero", runs);
    println!(
        "{:<40} {:>8.1} GiB/s",
        "zero_runs 4 KiB, data in every block", data_blocks
    );
}
