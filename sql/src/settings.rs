//! The session options `SET` may change, in Flink's words: whether statements over the Kafka
//! topics end at the topics' end or follow them, how an updating result is shown, where a
//! stream starts, and event time.
//!
//! These are the only statements that change the session. A `SET` of any other name (say
//! `datafusion.runtime.memory_limit`) goes on to DataFusion's planner, where the read-only
//! check refuses it (`read_only.rs`): nothing here writes, registers a table or lifts the
//! memory budget.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// How a statement over a Kafka topic runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeMode {
    /// Each partition from its earliest offset to its end offset when the statement started.
    Batch,
    /// Follows the topic until the statement is stopped (Ctrl-C, --max-rows, --timeout).
    Streaming,
}

/// How a streaming statement's result is shown (Flink's `sql-client.execution.result-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultMode {
    /// On a terminal, an updating result as a grid refreshed in place; rows as they come.
    Table,
    /// Every change as a row: `+I[…]`, `-U[…]`, `+U[…]`, `-D[…]`.
    Changelog,
    /// Boxed rows as they come, with an `op` column.
    Tableau,
}

/// Where a streaming statement starts reading (Flink's Kafka `scan.startup.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// Each partition's first record still in the topic.
    EarliestOffset,
    /// Each partition's end: only what is produced from now on.
    LatestOffset,
}

/// The options and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `execution.runtime-mode`.
    pub runtime_mode: RuntimeMode,
    /// `sql-client.execution.result-mode`.
    pub result_mode: ResultMode,
    /// `scan.startup.mode`.
    pub startup_mode: StartupMode,
    /// `pageviews.watermark-delay`: the pipeline's `--watermark-delay`.
    pub watermark_delay: Duration,
    /// `table.exec.source.idle-timeout`: the pipeline's `--idle-timeout`.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    /// The pipeline's event-time defaults; batch mode; Flink's table mode; a stream from now.
    fn default() -> Self {
        Settings {
            runtime_mode: RuntimeMode::Batch,
            result_mode: ResultMode::Table,
            startup_mode: StartupMode::LatestOffset,
            watermark_delay: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// The option names, as `SET` takes them.
pub const KEYS: [&str; 5] = [
    "execution.runtime-mode",
    "sql-client.execution.result-mode",
    "scan.startup.mode",
    "pageviews.watermark-delay",
    "table.exec.source.idle-timeout",
];

/// A `SET` this module does not take.
#[derive(Debug, Error, PartialEq)]
#[error("SET '{key}' = '{value}': {expected}")]
pub struct SettingError {
    key: String,
    value: String,
    expected: String,
}

/// A statement about the session options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// `SET 'key' = 'value'`.
    Set { key: String, value: String },
    /// `SET` alone: show every option.
    Show,
    /// `RESET 'key'`, or `RESET` alone (every option).
    Reset(Option<String>),
}

/// `sql` as a statement about our session options, or `None` when it is anything else (a
/// `SET` of another name included, which DataFusion's planner then sees and refuses).
pub(crate) fn parse(sql: &str) -> Option<Statement> {
    let text = sql.trim().trim_end_matches(';').trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    if word.eq_ignore_ascii_case("RESET") {
        return match rest {
            "" => Some(Statement::Reset(None)),
            key => known(&unquote(key)).map(|k| Statement::Reset(Some(k.to_string()))),
        };
    }
    if !word.eq_ignore_ascii_case("SET") {
        return None;
    }
    if rest.is_empty() {
        return Some(Statement::Show);
    }
    let (key, value) = rest.split_once('=')?;
    let key = known(&unquote(key))?.to_string();
    Some(Statement::Set { key, value: unquote(value) })
}

fn known(key: &str) -> Option<&'static str> {
    KEYS.into_iter().find(|k| k.eq_ignore_ascii_case(key))
}

/// `'text'`, `"text"` or `text`, trimmed, without its quotes.
fn unquote(text: &str) -> String {
    let t = text.trim();
    for q in ['\'', '"', '`'] {
        if let Some(inner) = t.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner.replace(&format!("{q}{q}"), &q.to_string());
        }
    }
    t.to_string()
}

impl Settings {
    /// Sets `key` (one of [`KEYS`]) to `value`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let err = |expected: &str| SettingError {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let v = value.trim().to_ascii_lowercase();
        match key {
            "execution.runtime-mode" => {
                self.runtime_mode = match v.as_str() {
                    "batch" => RuntimeMode::Batch,
                    "streaming" => RuntimeMode::Streaming,
                    _ => return Err(err("the runtime mode is 'batch' or 'streaming'")),
                }
            }
            "sql-client.execution.result-mode" => {
                self.result_mode = match v.as_str() {
                    "table" => ResultMode::Table,
                    "changelog" => ResultMode::Changelog,
                    "tableau" => ResultMode::Tableau,
                    _ => return Err(err("the result mode is 'table', 'changelog' or 'tableau'")),
                }
            }
            "scan.startup.mode" => {
                self.startup_mode = match v.as_str() {
                    "earliest-offset" | "earliest" => StartupMode::EarliestOffset,
                    "latest-offset" | "latest" => StartupMode::LatestOffset,
                    _ => return Err(err("a stream starts at 'earliest-offset' or 'latest-offset'")),
                }
            }
            "pageviews.watermark-delay" | "table.exec.source.idle-timeout" => {
                let d = humantime::parse_duration(&v.replace(' ', ""))
                    .map_err(|e| err(&format!("{e} (a duration: 500ms, 5s, 1min)")))?;
                if key == "pageviews.watermark-delay" {
                    self.watermark_delay = d;
                } else {
                    self.idle_timeout = d;
                }
            }
            _ => return Err(err(&format!("the options are {}", KEYS.join(", ")))),
        }
        Ok(())
    }

    /// Every option with its value, in [`KEYS`] order.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        vec![
            (KEYS[0], self.runtime_mode.to_string()),
            (KEYS[1], self.result_mode.to_string()),
            (KEYS[2], self.startup_mode.to_string()),
            (KEYS[3], duration(self.watermark_delay)),
            (KEYS[4], duration(self.idle_timeout)),
        ]
    }

    /// Sets `key` back to its value in `defaults` (the flags'), or every option when `None`.
    pub fn reset(&mut self, key: Option<&str>, defaults: &Settings) {
        let Some(key) = key else {
            *self = defaults.clone();
            return;
        };
        for (k, value) in defaults.list() {
            if k == key {
                // A value `list` printed always parses back.
                let _ = self.set(k, &value);
            }
        }
    }
}

impl fmt::Display for RuntimeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeMode::Batch => "batch",
            RuntimeMode::Streaming => "streaming",
        })
    }
}

impl fmt::Display for ResultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResultMode::Table => "table",
            ResultMode::Changelog => "changelog",
            ResultMode::Tableau => "tableau",
        })
    }
}

impl fmt::Display for StartupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartupMode::EarliestOffset => "earliest-offset",
            StartupMode::LatestOffset => "latest-offset",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flinks_set_statements_are_ours_and_other_names_are_not() {
        assert_eq!(
            parse("SET 'execution.runtime-mode' = 'streaming';"),
            Some(Statement::Set { key: "execution.runtime-mode".into(), value: "streaming".into() })
        );
        assert_eq!(
            parse("set sql-client.execution.result-mode=changelog"),
            Some(Statement::Set {
                key: "sql-client.execution.result-mode".into(),
                value: "changelog".into()
            })
        );
        assert_eq!(parse("SET;"), Some(Statement::Show));
        assert_eq!(
            parse("RESET 'scan.startup.mode'"),
            Some(Statement::Reset(Some("scan.startup.mode".into())))
        );
        assert_eq!(parse("RESET"), Some(Statement::Reset(None)));
        for other in [
            "SET datafusion.runtime.memory_limit = '1T'",
            "SET datafusion.execution.batch_size = 1",
            "RESET datafusion.execution.batch_size",
            "SELECT 1",
            "SETTINGS",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn values_are_checked_and_listed_as_they_are_set() {
        let mut s = Settings::default();
        s.set("execution.runtime-mode", "STREAMING").unwrap();
        s.set("scan.startup.mode", "earliest-offset").unwrap();
        s.set("table.exec.source.idle-timeout", "2 s").unwrap();
        s.set("pageviews.watermark-delay", "500ms").unwrap();
        assert_eq!(
            s.list(),
            vec![
                (KEYS[0], "streaming".to_string()),
                (KEYS[1], "table".to_string()),
                (KEYS[2], "earliest-offset".to_string()),
                (KEYS[3], "500ms".to_string()),
                (KEYS[4], "2s".to_string()),
            ]
        );
        let err = s.set("sql-client.execution.result-mode", "grid").unwrap_err().to_string();
        assert!(err.contains("'table', 'changelog' or 'tableau'"), "{err}");
        s.reset(Some("scan.startup.mode"), &Settings::default());
        assert_eq!(s.startup_mode, StartupMode::LatestOffset);
        s.reset(None, &Settings::default());
        assert_eq!(s, Settings::default());
    }
}
