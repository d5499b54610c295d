//! Hot-path benchmarks: decode, window count and encode (JSON lines and Parquet), per batch
//! of generated records.
//!
//! `cargo bench` prints throughput in records per second (criterion's "elem/s").

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pageviews::event::decode;
use pageviews::sink::parquet::ParquetFile;
use pageviews::sink::{jsonl, Row, Table};
use pageviews::source::GeneratorConfig;
use pageviews::window::TumblingCount;

const N: u64 = 100_000;

fn records() -> Vec<Vec<u8>> {
    let gen = GeneratorConfig {
        rate: 0,
        count: None,
        max_late_ms: 1000,
        seed: 1,
        start_ms: 1_577_836_800_000,
        interval_us: None,
    };
    (0..N)
        .map(|seq| {
            let mut out = Vec::new();
            gen.write_record(seq, &mut out);
            out
        })
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let recs = records();
    let views: Vec<_> = recs.iter().map(|r| decode(r, 1 << 20).expect("generated records decode")).collect();
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(N));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for r in &recs {
                black_box(decode(black_box(r), 1 << 20).ok());
            }
        })
    });
    group.bench_function("window", |b| {
        b.iter(|| {
            let mut w = TumblingCount::new(60_000, 0);
            for v in &views {
                if !w.is_late(v.timestamp, i64::MIN) {
                    w.add(v.timestamp, &v.postcode);
                }
            }
            black_box(w.next_end())
        })
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(16 << 20);
        b.iter(|| {
            out.clear();
            for v in &views {
                jsonl::write_view(&mut out, v);
            }
            black_box(out.len())
        })
    });
    group.bench_function("encode_parquet", |b| {
        b.iter(|| {
            let mut file = ParquetFile::new(Table::PageViews, 1 << 17).expect("a parquet file");
            for v in &views {
                file.push(&Row::View(v)).expect("a page view row");
            }
            black_box(file.finish().expect("a finished file").len())
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
