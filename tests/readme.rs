//! The README, run top to bottom in one folder: every command of its ```sh blocks, in order,
//! in one shell (so `export`, `&` and `kill %1` work as they do for a reader), against the
//! real binaries, a real Kafka broker and real object stores (an S3 server and Azurite). Commands are read from the
//! README itself, so the test breaks when the README does.
//!
//! Where a README command shows its output (a ```text block right after it), the output must
//! match, but for the time a statement took; the same for each ```sql block, run on the
//! table root of the last `pageviews sql --output` before it. While a pipeline runs in the
//! background, a `pageviews sql` command is repeated until it shows rows, for one checkpoint
//! interval and five seconds: the README's promise.
//!
//! What the test changes, and why, is all in [`substitute`]: the servers are the suite's
//! (started once, shared with other tests, so never stopped here), names on them are unique,
//! and the binaries are the ones cargo built for this test run.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use pageviews_testkit::terminal::{after_last, at_prompt, Terminal};

/// How long one README command may take (the longest produce 100,000 events at full speed
/// in a debug build).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// One checkpoint interval and a few seconds: how soon `pageviews sql` shows the rows of a
/// pipeline started in the background.
const FIRST_ROWS_WITHIN: Duration = Duration::from_secs(15);

/// A step of the README, in order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// A command line of a ```sh block, with the output shown right after the block, if any.
    Shell { command: String, shown: Option<String> },
    /// A ```sql block, with the output shown right after it.
    Sql { statement: String, shown: Option<String> },
}

/// The README's steps: commands of ```sh blocks (comments and blank lines dropped, a
/// trailing `\` joining lines) and ```sql blocks, each with the ```text block that follows.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        let kind = match line.trim() {
            "```sh" => "sh",
            "```sql" => "sql",
            "```text" => {
                let text = block(&mut lines);
                match steps.last_mut() {
                    Some(Step::Shell { shown, .. } | Step::Sql { shown, .. }) if shown.is_none() => {
                        *shown = Some(text)
                    }
                    _ => {}
                }
                continue;
            }
            _ => continue,
        };
        let text = block(&mut lines);
        if kind == "sql" {
            steps.push(Step::Sql { statement: text, shown: None });
            continue;
        }
        let mut pending = String::new();
        for line in text.lines() {
            let line = strip_comment(line);
            if let Some(start) = line.strip_suffix('\\') {
                pending.push_str(start);
                continue;
            }
            pending.push_str(line);
            let command = pending.trim().to_string();
            pending.clear();
            if !command.is_empty() {
                steps.push(Step::Shell { command, shown: None });
            }
        }
    }
    steps
}

/// The lines up to the closing fence.
fn block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in lines.by_ref() {
        if line.trim() == "```" {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `line` without a `#` comment outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(' ')) => return line[..i].trim_end(),
            _ => {}
        }
    }
    line.trim_end()
}

/// Unique names on the shared servers (the topic reaches the README's commands as
/// `KAFKA_TOPIC`, the group as `CONSUMER_GROUP` and by [`substitute`]).
struct Names {
    topic: String,
    group: String,
    bucket: String,
}

/// What the test runs instead of a README command, with the reason; `None` skips it.
fn substitute(command: &str, names: &Names) -> Option<String> {
    let skipped = [
        // The binaries are the ones cargo built for this test run, on PATH.
        "scripts/build",
        // The suite that runs this test.
        "scripts/test",
        // Benchmarks: scripts/test runs them in test mode.
        "cargo bench",
        "scripts/bench-e2e",
        // Release builds against DuckDB, timed by hand (docs/measurements.md has its tables).
        "scripts/bench-sql",
        // A month in minutes: tests/month.rs runs its short version.
        "scripts/month",
        // The streaming SQL session: the_readme_streaming_session_runs_in_a_terminal types it.
        "pageviews sql --brokers",
        // The servers are the suite's, shared with other tests: not stopped here.
        "scripts/kafka-local stop",
        "scripts/s3-local stop",
        "scripts/azure-local stop",
        // Deploy: no container engine runs here (tests/compose.sh validates compose.yaml);
        // the Makefile's targets wrap scripts tested on their own (tests/stack.sh runs the
        // native stack, scripts/test is the suite).
        "docker ",
        "make ",
        // Kubernetes: no cluster runs here; scripts/check-deploy renders the chart with the
        // README's values and validates it against the API types.
        "kubectl ",
        "helm install",
        // Watching it run: tests/dashboards.rs runs a real Prometheus against pipelines.
        "scripts/prom-local",
        // Placeholders for a real deployment's brokers and buckets; tests/scale_out.rs runs
        // several instances and workers against the suite's broker.
        "example.com",
        "KAFKA_OPTIONS=security.protocol",
        "s3://my-bucket",
        "s3://lake/",
    ];
    if skipped.iter().any(|s| command.contains(s)) {
        return None;
    }
    let broker = pageviews_testkit::kafka::broker();
    let exports = |kind| {
        let env = pageviews_testkit::store::env_of(kind);
        env.vars().iter().map(|(k, v)| format!("export {k}='{v}'")).collect::<Vec<_>>().join("; ")
    };
    use pageviews_testkit::store::Kind;
    let command = command
        // The suite's broker and object stores, started once for every test.
        .replace("$(scripts/kafka-local start | tail -n 1)", broker)
        .replace("eval \"$(scripts/s3-local env)\"", &exports(Kind::S3))
        .replace("eval \"$(scripts/azure-local env)\"", &exports(Kind::Azure))
        // Names no other test (or earlier run) uses on them.
        .replace("--group pageviews", &format!("--group {}", names.group))
        .replace("bucket demo", &format!("bucket {}", names.bucket))
        .replace("s3://demo/", &format!("s3://{}/", names.bucket))
        .replace("az://demo/", &format!("az://{}/", names.bucket));
    Some(command)
}

/// A bash reading commands from the test, with job control like a terminal's.
struct Shell {
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    child: std::process::Child,
    log: PathBuf,
}

const DONE: &str = "__readme_step_done__";

impl Shell {
    fn start(dir: &Path, bin_dir: &Path, names: &Names) -> Shell {
        let log = dir.join("readme-stderr.log");
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = command("bash");
        cmd.args(["--norc", "--noprofile", "-s"])
            .current_dir(dir)
            .env("PATH", path)
            // A port of its own for each `pageviews run`'s HTTP endpoint.
            .env("PAGEVIEWS_HTTP", free_loopback_addr().to_string())
            .env("KAFKA_TOPIC", &names.topic)
            .env("CONSUMER_GROUP", &names.group)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        // The scripts find the servers the suite started by their state folders.
        for (var, folder) in [
            ("KAFKA_LOCAL_DIR", ".kafka-local"),
            ("S3_LOCAL_DIR", ".s3-local"),
            ("AZURE_LOCAL_DIR", ".azure-local"),
        ] {
            if std::env::var_os(var).is_none() {
                cmd.env(var, workspace().join(folder));
            }
        }
        let mut child = cmd.spawn().expect("bash");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "set -m").unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Shell { stdin, lines, child, log }
    }

    /// Runs `command`; returns its exit status and what it printed on stdout.
    fn run(&mut self, command: &str) -> (i32, String) {
        // Stdin is the terminal for a reader; here it is this pipe, which no command may
        // read (`pageviews sql` without -e would read the next commands as SQL).
        writeln!(self.stdin, "{{ {command}\n}} < /dev/null\necho \"{DONE} $?\"").unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("`{command}` did not finish in {COMMAND_TIMEOUT:?}:\n{}", self.log_tail())
            });
            if let Some(code) = line.strip_prefix(DONE) {
                return (code.trim().parse().unwrap_or(-1), out);
            }
            out.push_str(&line);
            out.push('\n');
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Background jobs first, as a reader closing the terminal would.
        let _ = writeln!(self.stdin, "kill -INT $(jobs -p) 2>/dev/null; wait; exit");
        let _ = self.child.wait();
    }
}

/// A result as the README shows it: the time a statement took left out.
fn normalized(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" in set (") {
            Some(i) => &l[..i + " in set".len()],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// The first number in a boxed result table (`| 123 | …`).
fn first_cell(table: &str) -> Option<i64> {
    let row = table.lines().filter(|l| l.starts_with('|')).nth(1)?;
    row.trim_start_matches(['|', ' ']).split([' ', '|']).next()?.parse().ok()
}

#[test]
fn the_readme_runs_top_to_bottom_in_one_folder() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() > 20, "too few README steps found: {steps:#?}");

    let dir = tempfile::tempdir().unwrap();
    // The reader's folder: the repository, as far as the README's `scripts/…` go.
    std::os::unix::fs::symlink(workspace().join("scripts"), dir.path().join("scripts")).unwrap();
    let bins = Binaries::beside_pageviews(env!("CARGO_BIN_EXE_pageviews"));
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for exe in [&bins.pageviews, &bins.sql] {
        std::os::unix::fs::symlink(exe, bin_dir.join(exe.file_name().unwrap())).unwrap();
    }
    let names = Names {
        topic: pageviews_testkit::kafka::unique("readme"),
        group: pageviews_testkit::kafka::unique("readme-group"),
        bucket: pageviews_testkit::kafka::unique("readme").to_lowercase(),
    };
    let mut shell = Shell::start(dir.path(), &bin_dir, &names);

    let mut background: Option<Instant> = None;
    let mut sql_root: Option<String> = None;
    let (mut ran, mut checked) = (0, 0);
    for step in &steps {
        let (command, shown) = match step {
            Step::Shell { command, shown } => {
                let Some(command) = substitute(command, &names) else { continue };
                if let Some(root) = command.split_once("pageviews sql --output ").map(|(_, r)| r) {
                    sql_root = root.split_whitespace().next().map(str::to_string);
                }
                (command, shown)
            }
            Step::Sql { statement, shown } => {
                let root = sql_root.as_deref().expect("a ```sql block after `pageviews sql --output ROOT`");
                let quoted = statement.trim().trim_end_matches(';').replace('\'', "'\\''");
                (format!("pageviews sql --output {root} -e '{quoted}'"), shown)
            }
        };
        let started = Instant::now();
        let (mut code, mut out) = shell.run(&command);
        if command.starts_with("pageviews sql") {
            if let Some(since) = background {
                while first_cell(&out).is_none_or(|n| n <= 0) && since.elapsed() < FIRST_ROWS_WITHIN {
                    (code, out) = shell.run(&command);
                }
                assert!(
                    first_cell(&out).is_some_and(|n| n > 0),
                    "`{command}` showed no rows {FIRST_ROWS_WITHIN:?} after the pipeline started:\n{out}"
                );
            }
        }
        assert_eq!(code, 0, "`{command}` failed ({code}):\n{out}\n{}", shell.log_tail());
        eprintln!("README: `{command}` ok in {:.1?}", started.elapsed());
        ran += 1;
        if command.trim_end().ends_with('&') {
            background = Some(Instant::now());
        } else if command.starts_with("kill") {
            background = None;
        }
        if let Some(shown) = shown {
            assert_eq!(
                normalized(&out),
                normalized(shown),
                "`{command}` printed something else than the README shows"
            );
            checked += 1;
        }
    }
    assert!(ran > 15 && checked >= 5, "{ran} commands run, {checked} outputs checked");
}

/// The README's ```console session: what a person types at `pageviews> `, and `^C` for Ctrl-C.
fn session(readme: &str) -> Vec<String> {
    let start =
        readme.find("```console\n").expect("a ```console session in the README") + "```console\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("pageviews> ").or(if l == "^C" { Some("^C") } else { None }))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_streaming_session_runs_in_a_terminal() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let typed = session(&readme);
    assert!(typed.iter().filter(|l| *l == "^C").count() >= 2, "{typed:?}");
    let bins = Binaries::beside_pageviews(env!("CARGO_BIN_EXE_pageviews"));
    let dir = tempfile::tempdir().unwrap();
    let broker = pageviews_testkit::kafka::broker();
    // A topic of this test's own on the shared broker, as the README's run uses.
    let topic = pageviews_testkit::kafka::unique("readme-stream");
    let _datagen = KillOnDrop::new(
        command(bins.pageviews.to_str().unwrap())
            .args(["datagen", "--brokers", broker, "--topic", &topic])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sql = format!("{} sql --brokers {broker} --topic {topic}", bins.pageviews.display());
    let terminal = Terminal::start(&sql, dir.path(), 200, 50);
    terminal.wait("prompt", Duration::from_secs(30), at_prompt);
    for line in typed {
        let line = line.replace("kafka.page_views", &format!("kafka.\"{topic}\""));
        let before = terminal.screen();
        let (stopped, settings) =
            (before.matches("Received a total of").count(), before.matches("[INFO] Session").count());
        if line == "^C" {
            terminal.ctrl_c();
            let took = terminal.wait("return to the prompt after Ctrl-C", Duration::from_secs(5), |s| {
                s.matches("Received a total of").count() > stopped && at_prompt(s)
            });
            eprintln!("README session: Ctrl-C returned to the prompt in {took:?}");
        } else if line == "quit" {
            terminal.type_line(&line);
            terminal.wait("the shell's end", Duration::from_secs(10), |_| !terminal.is_running());
        } else if line.starts_with("SET") {
            terminal.type_line(&line);
            terminal.wait("SET's answer", Duration::from_secs(10), |s| {
                s.matches("[INFO] Session").count() > settings && at_prompt(s)
            });
        } else {
            terminal.type_line(&line);
            // Rows print as the topic brings them; a window once it closes (within a
            // minute of event time and the watermark delay).
            let following = before.matches("[INFO] Following").count();
            let took = terminal.wait("a row of the stream", Duration::from_secs(90), |s| {
                s.matches("[INFO] Following").count() > following
                    && after_last(s, "[INFO] Following").lines().any(|l| l.starts_with("| 20"))
            });
            eprintln!("README session: `{line}` printed its first row in {took:?}");
        }
    }
}

#[test]
fn readme_steps_are_read_as_a_reader_would_type_them() {
    let md = "intro\n```sh\n# a comment\ncargo run -- run \\\n  --count 5   # ten\n\nx '#not' && y\n```\n```text\nout\n```\n\n```sql\nSELECT 1;\n```\n```text\n+---+\n```\n";
    assert_eq!(
        steps(md),
        vec![
            Step::Shell { command: "cargo run -- run   --count 5".into(), shown: None },
            Step::Shell { command: "x '#not' && y".into(), shown: Some("out\n".into()) },
            Step::Sql { statement: "SELECT 1;\n".into(), shown: Some("+---+\n".into()) },
        ]
    );
    assert_eq!(normalized("| 1 |\n2 rows in set (0.012 s)\n"), "| 1 |\n2 rows in set");
    assert_eq!(first_cell("+----+\n| n  |\n+----+\n| 42 |\n+----+\n"), Some(42));
}
