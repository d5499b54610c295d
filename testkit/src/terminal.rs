//! A real terminal for the interactive shell: a tmux session on a tmux server of its own,
//! typed into as a person would and read back from its screen.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::command;

/// A tmux session running one command, on a server no other test shares.
pub struct Terminal {
    server: String,
}

impl Terminal {
    /// Starts `command_line` (run by tmux's shell) in `dir` on a `width`×`height` terminal.
    pub fn start(command_line: &str, dir: &Path, width: u16, height: u16) -> Self {
        let terminal = Terminal { server: crate::kafka::unique("tmux") };
        let (width, height) = (width.to_string(), height.to_string());
        let dir = dir.to_str().expect("a UTF-8 folder");
        let args = ["new-session", "-d", "-x", &width, "-y", &height, "-c", dir, command_line];
        let started = terminal.tmux(&args);
        assert!(started.status.success(), "tmux new-session: {started:?}");
        terminal
    }

    /// Runs `tmux ARGS` against this terminal's server.
    pub fn tmux(&self, args: &[&str]) -> std::process::Output {
        command("tmux")
            .args(["-L", &self.server])
            .args(args)
            .output()
            .expect("tmux (scripts/setup installs it)")
    }

    /// What the terminal shows, its scrollback included.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-S", "-100000"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `done`; returns how long that took.
    pub fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return started.elapsed();
            }
            let tail: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(15)..].join("\n");
            assert!(started.elapsed() < timeout, "no {what} within {timeout:?}; the terminal shows:\n{tail}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` and Enter, as a person would (tmux would read a final `;` as its own).
    pub fn type_line(&self, text: &str) {
        let text = text.strip_suffix(';').map_or(text.to_string(), |t| format!("{t}\\;"));
        assert!(self.tmux(&["send-keys", "-l", &text]).status.success());
        assert!(self.tmux(&["send-keys", "Enter"]).status.success());
    }

    /// Presses Ctrl-C.
    pub fn ctrl_c(&self) {
        assert!(self.tmux(&["send-keys", "C-c"]).status.success());
    }

    /// True while the command runs.
    pub fn is_running(&self) -> bool {
        self.tmux(&["has-session"]).status.success()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The screen from the last occurrence of `prefix` on.
pub fn after_last<'a>(screen: &'a str, prefix: &str) -> &'a str {
    screen.rfind(prefix).map_or("", |i| &screen[i..])
}

/// True when the SQL shell waits at its prompt.
pub fn at_prompt(screen: &str) -> bool {
    screen.lines().rev().find(|l| !l.trim().is_empty()).is_some_and(|l| l.trim_end() == "pageviews>")
}
