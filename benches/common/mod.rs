//! Shared bench plumbing: scale, result tables, JSON results.

#![allow(dead_code)]

use std::path::PathBuf;

/// Workload scale from `OUTPOST_BENCH_SCALE` (1.0 = full size).
pub fn scale() -> f64 {
    std::env::var("OUTPOST_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// `full` scaled down, at least `min`.
pub fn scaled(full: usize, min: usize) -> usize {
    ((full as f64 * scale()) as usize).max(min)
}

/// One measured figure beside its baseline.
pub struct Figure {
    pub id: &'static str,
    pub workload: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: f64,
    pub baseline_unit: &'static str,
    pub baseline_name: String,
}

impl Figure {
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            0.0
        } else {
            self.value / self.baseline
        }
    }
}

/// Prints a markdown table of `figures` and writes each to `target/bench-results/<id>.json`.
pub fn report(title: &str, figures: &[Figure]) {
    println!("\n### {title}\n");
    println!("| id | workload | figure | baseline | ratio |");
    println!("|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {} | {:.1} {} | {:.1} {} ({}) | {:.2}× |",
            f.id,
            f.workload,
            f.value,
            f.unit,
            f.baseline,
            f.baseline_unit,
            f.baseline_name,
            f.ratio()
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    if std::fs::create_dir_all(&dir).is_ok() {
        for f in figures {
            let json = serde_json::json!({
                "id": f.id,
                "workload": f.workload,
                "value": f.value,
                "unit": f.unit,
                "baseline": f.baseline,
                "baseline_unit": f.baseline_unit,
                "baseline_name": f.baseline_name,
                "ratio": f.ratio(),
                "scale": scale(),
            });
            let _ = std::fs::write(dir.join(format!("{}.json", f.id)), json.to_string());
        }
    }
}
