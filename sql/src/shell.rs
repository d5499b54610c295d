//! The interactive shell: line editing and history (rustyline), statements that span lines
//! until their `;`, and an error that is printed without ending the session.

use std::io::Write;
use std::path::PathBuf;

use pageviews_core::Shutdown;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::signal::unix::{Signal, SignalKind};

use crate::budget::format_size;
use crate::output::Format;
use crate::script::{is_incomplete, split_statements};
use crate::session::Session;

const HELP: &str = "\
Statements end with ';' and may span lines. Besides DataFusion SQL:
  SHOW TABLES;              the tables: page_views, page_view_aggregates, late_page_views, dead_letters
  DESCRIBE page_views;      a table's columns and types
  EXPLAIN SELECT …;         the plan, with the files each scan reads
  help                      this text
  quit  (or exit, \\q, Ctrl-D)
With --brokers, the topic is the table kafka.page_views. Streaming mode follows it:
  SET 'execution.runtime-mode' = 'streaming';   (or 'batch': up to its end, the default)
  SET 'sql-client.execution.result-mode' = 'changelog';   (or 'table', 'tableau')
  SET 'scan.startup.mode' = 'earliest-offset';   (or 'latest-offset', the default)
  SET;                      the options; RESET goes back to the flags'
  Ctrl-C stops a statement and returns here.
The shell only reads: INSERT, COPY, CREATE and DROP are refused.
Filter on day = 'YYYY-MM-DD' and hour = 'HH' to read only those partitions. Timestamps
are UTC. In dead_letters, write \"partition\" and \"offset\" in double quotes: they are SQL
keywords.";

/// A listener for `kind`, registered before the statement it guards starts: one made by a
/// spawned task registers only once a runtime thread polls it, and a busy statement can hold
/// both threads that long, while the signal's default action still ends the process.
pub fn listen(rt: &tokio::runtime::Runtime, kind: SignalKind) -> std::io::Result<Signal> {
    let _runtime = rt.enter();
    tokio::signal::unix::signal(kind)
}

/// Runs the shell until `quit` or end of input. `history` is where the history is kept
/// between sessions (none: history lives for this session only).
pub fn run(
    session: &Session,
    rt: &tokio::runtime::Runtime,
    format: Format,
    history: Option<PathBuf>,
) -> rustyline::Result<()> {
    let mut editor = DefaultEditor::new()?;
    if let Some(path) = &history {
        // A first session has no history file yet; that is not an error worth showing.
        let _ = editor.load_history(path);
    }
    let budget = session.budget();
    println!(
        "pageviews SQL on {} (memory limit {}) — type help for help, quit to leave.",
        session.catalog().root.base(),
        format_size(budget.memory())
    );
    for table in &session.catalog().tables {
        if table.files == 0 {
            println!("note: {}", table.empty_note());
        }
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "pageviews> " } else { "        -> " };
        match editor.readline(prompt) {
            Ok(line) => {
                if buffer.is_empty() {
                    match line.trim().trim_end_matches(';').trim().to_ascii_lowercase().as_str() {
                        "quit" | "exit" | "\\q" => break,
                        "help" | "\\?" | "\\h" => {
                            println!("{HELP}");
                            continue;
                        }
                        _ => {}
                    }
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if is_incomplete(&buffer) {
                    continue;
                }
                let _ = editor.add_history_entry(buffer.trim());
                for statement in split_statements(&buffer) {
                    // Ctrl-C while a statement runs stops it, not the shell.
                    let stop = Shutdown::default();
                    let mut interrupt = listen(rt, SignalKind::interrupt())?;
                    let watcher = rt.spawn({
                        let stop = stop.clone();
                        async move {
                            if interrupt.recv().await.is_some() {
                                stop.trigger();
                            }
                        }
                    });
                    let mut out = std::io::stdout().lock();
                    let result = rt.block_on(session.run_until(
                        &statement,
                        format,
                        &mut out,
                        &mut std::io::stdout(),
                        &stop,
                    ));
                    watcher.abort();
                    if let Err(e) = result {
                        // The session goes on after a bad statement, as in Flink's client.
                        let _ = out.flush();
                        eprintln!("error: {}", pageviews_core::secrets::scrub(&e.to_string()));
                    }
                }
                buffer.clear();
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C drops the statement being typed, like a shell.
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e),
        }
    }
    if let Some(path) = &history {
        if let Err(e) = editor.save_history(path) {
            eprintln!("warning: cannot save the history to {}: {e}", path.display());
        }
    }
    Ok(())
}
