//! The interactive shell under a real terminal (tmux), typed into as a person would, against
//! the real broker: an updating streaming result in Flink's `table` result mode is one grid
//! redrawn in place, whose counts follow the topic as records arrive and equal the
//! generator's records per postcode, with the bad records counted in its status line; Ctrl-C
//! returns to the prompt.

use std::collections::BTreeMap;
use std::time::Duration;

use pageviews::source::GeneratorConfig;
use pageviews_testkit::kafka::{broker, create_topic, expected, generator, produce, unique};
use pageviews_testkit::terminal::{after_last, at_prompt, Terminal};

/// Views per postcode among the valid records of `streams`, and the bad ones.
fn per_postcode(streams: &[(GeneratorConfig, f64)]) -> (BTreeMap<String, u64>, u64) {
    let (rows, bad) = expected(streams);
    let mut out = BTreeMap::new();
    for row in rows {
        let row: serde_json::Value = serde_json::from_str(&row).expect("a JSON row");
        *out.entry(row["postcode"].as_str().expect("a postcode").to_string()).or_default() += 1;
    }
    (out, bad)
}

/// The rows of the last grid on `screen`, `postcode -> views`.
fn grid(screen: &str) -> BTreeMap<String, u64> {
    after_last(screen, "| postcode")
        .lines()
        .filter_map(|l| match l.split('|').map(str::trim).collect::<Vec<_>>()[..] {
            ["", postcode, views, ""] => views.parse().ok().map(|v| (postcode.to_string(), v)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_updating_result_is_one_grid_redrawn_in_place_with_the_generators_counts() {
    let topic = unique("sql-grid");
    create_topic(&topic, 3);
    let first = generator(21, "2024-01-01 00:00:00", 2_000);
    produce(&topic, first.clone(), 0.02);
    let dir = tempfile::tempdir().unwrap();
    let sql = format!("{} --brokers {} --topic {topic}", env!("CARGO_BIN_EXE_pageviews-sql"), broker());
    let terminal = Terminal::start(&sql, dir.path(), 160, 50);
    terminal.wait("the prompt", Duration::from_secs(30), at_prompt);
    for set in [
        "SET 'execution.runtime-mode' = 'streaming';",
        "SET 'scan.startup.mode' = 'earliest-offset';",
        "SET 'sql-client.execution.result-mode' = 'table';",
    ] {
        let before = terminal.screen().matches("[INFO] Session").count();
        terminal.type_line(set);
        terminal.wait("SET's answer", Duration::from_secs(10), |s| {
            s.matches("[INFO] Session").count() > before && at_prompt(s)
        });
    }
    terminal
        .type_line(&format!("SELECT postcode, count(*) AS views FROM kafka.\"{topic}\" GROUP BY postcode;"));
    let (want, bad) = per_postcode(&[(first.clone(), 0.02)]);
    let bad = format!("{bad} records skipped");
    terminal.wait("the grid of the first records", Duration::from_secs(60), |s| {
        grid(s) == want && after_last(s, "| postcode").contains(&bad)
    });

    // Records that arrive later update the same grid.
    let second = generator(22, "2024-01-01 01:00:00", 1_000);
    produce(&topic, second.clone(), 0.0);
    let (want, _) = per_postcode(&[(first, 0.02), (second, 0.0)]);
    terminal.wait("the grid updated by the later records", Duration::from_secs(60), |s| grid(s) == want);
    let screen = terminal.screen();
    assert_eq!(screen.matches("| postcode").count(), 1, "one grid, redrawn in place:\n{screen}");

    terminal.ctrl_c();
    terminal.wait("the prompt after Ctrl-C", Duration::from_secs(5), at_prompt);
}
