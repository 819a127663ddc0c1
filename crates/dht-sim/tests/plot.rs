//! `--plot DIR`: a small run writes the four SVG plots, each holding its series, point by
//! point. The provider's heap is counted by a real counting allocator, as in the binary.
#![allow(clippy::unwrap_used)]

use std::{alloc::System, path::Path};

use cap::Cap;
use dht_provider_store::MemoryStore;
use dht_sim::{
    Sim, SimConfig,
    memory::MemoryProbes,
    plot::{PLOTS, write_plots},
    provide::{ProvideConfig, Strategy, run_provide},
};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

fn heap_bytes() -> u64 {
    HEAP.allocated() as u64
}

/// The number of points of each polyline in the SVG file at `path`.
fn polylines(path: &Path) -> Vec<usize> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<polyline")
        .skip(1)
        .filter_map(|el| {
            let points = el.split("points=\"").nth(1)?.split('"').next()?;
            Some(points.split_whitespace().count())
        })
        .collect()
}

#[test]
fn a_small_run_writes_four_plots_with_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let report = dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(SimConfig::default().with_nodes(200).with_seed(5))
            .await
            .unwrap();
        let config = ProvideConfig::new(Strategy::Sweep, 2_000)
            .with_findable_sample(20)
            .with_interval(std::time::Duration::from_secs(2 * 3600))
            .with_holder_samples(4)
            .with_timeline(true)
            .with_memory(MemoryProbes {
                heap_bytes: Some(heap_bytes),
                store_bytes: None,
                after_preload: None,
            });
        run_provide(&sim, MemoryStore::new(), &config, |_| {})
            .await
            .unwrap()
    });
    let minutes = report.timeline.len();
    // One provide of a few minutes, a 2 h cycle, its end: a point a minute.
    assert!(minutes >= 120, "{minutes} timeline samples");
    assert!(report.timeline.iter().all(|s| s.heap_bytes.is_some()));
    assert!(report.timeline.iter().any(|s| s.add_provider > 0));
    let holders = report.reprovide.as_ref().unwrap().holder_samples.len();
    assert_eq!(holders, 5, "4 samples and the end-of-cycle check");

    let paths = write_plots(&report, dir.path()).unwrap();
    assert_eq!(paths.len(), 4);
    for (path, name) in paths.iter().zip(PLOTS) {
        assert_eq!(path.file_name().unwrap(), name);
    }
    // Each series is one polyline with one point per sample (legend marks have 2 points).
    let series = |file: &str, points: usize| {
        polylines(&dir.path().join(file))
            .into_iter()
            .filter(|&n| n == points)
            .count()
    };
    assert_eq!(series("holders.svg", holders), 2, "mean and 5th percentile");
    assert_eq!(
        series("requests.svg", minutes),
        3,
        "FIND_NODE, ADD_PROVIDER, other"
    );
    assert_eq!(series("behind.svg", minutes), 2, "behind, keys queued");
    // The heap, and heap with RocksDB (here none: the keystore is in memory).
    assert_eq!(series("memory.svg", minutes), 2, "heap, together");
}
