//! The `pageviews` binary: parse the command line, run, turn errors into an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pageviews::cli::{Cli, Command};
use pageviews::logging::LogFormat;
use pageviews::Shutdown;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    pageviews::logging::init(format);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = pageviews::core::error_chain(e.as_ref());
            let message = pageviews::core::secrets::scrub(&message);
            // A log shipper reading JSON lines gets the final error as one of them.
            match format {
                LogFormat::Json => tracing::error!(error = %message, "pageviews stopped with an error"),
                LogFormat::Text => eprintln!("error: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let derived_id = args.pipeline_id.is_none();
            let config = args.into_config()?;
            let shutdown = Shutdown::default();
            watch_signals(shutdown.clone());
            if derived_id {
                pageviews::pipeline::refuse_legacy_output(&config, &shutdown)?;
            }
            let metrics = std::sync::Arc::new(pageviews::metrics::Metrics::new(&config.pipeline_id));
            let summary = pageviews::start(config, shutdown, metrics)?.join()?;
            tracing::debug!(?summary, "run finished");
            Ok(())
        }
        Command::Datagen(args) => {
            let config = args.into_config()?;
            let shutdown = Shutdown::default();
            watch_signals(shutdown.clone());
            pageviews::datagen::run_datagen(&config, &shutdown, true)?;
            Ok(())
        }
        Command::Sql(args) => exec_sql(&args.args),
        Command::Verify(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let storage = pageviews::core::storage::Storage::open(&args.output, rt.handle().clone())?;
            let env = pageviews::core::storage::StoreEnv::process();
            let report = pageviews::verify::verify_with(&storage, args.iceberg().as_ref(), &env)?;
            println!("{report}");
            if !report.is_clean() {
                anyhow::bail!("{} violation(s) in {}", report.violations.len(), args.output);
            }
            Ok(())
        }
    }
}

/// Replaces this process with `pageviews-sql` from the same folder. DataFusion lives in that
/// binary, so building the pipeline does not compile it.
fn exec_sql(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the pageviews executable")?;
    let sql = exe.with_file_name("pageviews-sql");
    if !sql.is_file() {
        anyhow::bail!(
            "`pageviews sql` needs the pageviews-sql binary next to {}; build it with \
             `cargo build --release -p pageviews-sql` (or `cargo build -p pageviews-sql` for a debug build)",
            exe.display()
        );
    }
    let err = std::process::Command::new(&sql).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("cannot run {}", sql.display())))
}

/// First SIGINT/SIGTERM: checkpoint and stop. A second SIGINT: leave at once (the last
/// checkpoint still holds, so nothing committed is lost).
fn watch_signals(shutdown: Shutdown) {
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch signals; SIGINT will stop without a final checkpoint");
                return;
            }
        };
        rt.block_on(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!(
                "signal received: finishing the current batch and checkpointing within seconds (a second signal aborts)"
            );
            shutdown.trigger();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("second signal: aborting; the last checkpoint holds");
            std::process::exit(130);
        });
    });
}
