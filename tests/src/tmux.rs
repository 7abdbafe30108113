//! A real terminal for end-to-end tests of full-screen programs (`vpn tui`): a tmux server of
//! the test's own, one detached session of a given size running a plain shell, keys typed with
//! `send-keys`, the screen read with `capture-pane -p`.
//!
//! The server listens on a private socket in a directory the test owns (never the operator's
//! tmux), and is killed on drop. Waiting is always on screen content ([`Tmux::wait_for`]),
//! never a fixed sleep; a wait that times out panics with the last screen it saw.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::wait::poll_until;

/// The shell's prompt in the session: a marker a test can look for once a program has exited.
pub const PROMPT: &str = "tui-e2e$ ";

/// `tmux` on PATH; without it the test fails naming the remedy ([`crate::install::skip`]).
pub fn tmux_or_skip(test: &str) -> Option<PathBuf> {
    crate::install::tool_or_skip(test, "tmux", "apt-get install tmux")
}

/// One tmux server with one session (`main`), killed on drop.
#[derive(Debug)]
pub struct Tmux {
    tmux: PathBuf,
    socket: PathBuf,
    target: String,
}

impl Tmux {
    /// Starts a detached `cols`×`rows` session running `bash --norc --noprofile` (prompt
    /// [`PROMPT`], UTF-8 locale, no history file) with the socket in `dir`. The shell's
    /// environment is this process's minus every `VPN_*`, plus `env`.
    pub fn start(
        tmux: &Path,
        dir: &Path,
        cols: u16,
        rows: u16,
        env: &[(&str, &OsStr)],
    ) -> Result<Tmux> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let t = Tmux {
            tmux: tmux.to_path_buf(),
            socket: dir.join("tmux.sock"),
            target: "main".into(),
        };
        let mut cmd = t.command();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VPN_") || k == "TMUX" {
                cmd.env_remove(k);
            }
        }
        cmd.env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("PS1", PROMPT)
            .env("HISTFILE", "/dev/null");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["new-session", "-d", "-s", &t.target])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .args(["bash", "--norc", "--noprofile"]);
        let out = cmd.output().context("running tmux new-session")?;
        check("tmux new-session", &out)?;
        // Sizes stay as set even when a client attaches to look (`tmux -S SOCKET attach`).
        t.tmux_ok(&["set-option", "-g", "window-size", "manual"])?;
        t.resize(cols, rows)?;
        t.wait_for(Duration::from_secs(10), "the shell prompt", |s| {
            s.contains(PROMPT.trim_end())
        });
        Ok(t)
    }

    /// The socket, for `tmux -S SOCKET attach` while debugging a kept test.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.tmux);
        cmd.arg("-u")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket);
        cmd
    }

    fn tmux(&self, args: &[&str]) -> Result<Output> {
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("running tmux {args:?}"))
    }

    fn tmux_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.tmux(args)?;
        check(&format!("tmux {}", args.join(" ")), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Types `line` at the shell and presses Enter.
    pub fn run(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
    }

    /// Presses keys by tmux name (`a`, `Enter`, `Escape`, `F10`, `C-c`, `Down`…), one each.
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.target];
        args.extend_from_slice(keys);
        self.tmux_ok(&args)
            .unwrap_or_else(|e| panic!("sending keys {keys:?}: {e:#}"));
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) {
        self.tmux_ok(&["send-keys", "-t", &self.target, "-l", text])
            .unwrap_or_else(|e| panic!("typing {text:?}: {e:#}"));
    }

    /// A left click (press and release) on the cell at `col`, `row` (0-based), as a terminal
    /// with SGR mouse reporting sends it (the program must have enabled mouse capture).
    pub fn click(&self, col: u16, row: u16) {
        self.mouse(0, col, row);
    }

    /// A right click on the cell at `col`, `row` (0-based).
    pub fn right_click(&self, col: u16, row: u16) {
        self.mouse(2, col, row);
    }

    fn mouse(&self, button: u8, col: u16, row: u16) {
        let (x, y) = (col + 1, row + 1);
        self.write_raw(&format!("\x1b[<{button};{x};{y}M\x1b[<{button};{x};{y}m"))
            .unwrap_or_else(|e| panic!("sending a mouse click at {col},{row}: {e:#}"));
    }

    /// Writes `bytes` to the program's input in one write, as a terminal sends an escape
    /// sequence. (`send-keys` sends character by character: a program may then read a lone
    /// ESC, take it for the Escape key and the rest of the sequence for typed keys.)
    pub fn write_raw(&self, bytes: &str) -> Result<()> {
        self.tmux_ok(&["set-buffer", "-b", "raw", "--", bytes])?;
        // -d: drop the buffer; -r: no LF→CR translation. No -p: never bracketed as a paste.
        self.tmux_ok(&["paste-buffer", "-d", "-r", "-b", "raw", "-t", &self.target])?;
        Ok(())
    }

    /// The visible screen, one line per row (trailing blanks trimmed by tmux).
    pub fn screen(&self) -> String {
        self.tmux_ok(&["capture-pane", "-p", "-t", &self.target])
            .unwrap_or_else(|e| panic!("capturing the pane: {e:#}"))
    }

    /// Whether the program in the pane is on the alternate screen (a full-screen UI is up).
    pub fn alternate_on(&self) -> bool {
        self.format("#{alternate_on}") == "1"
    }

    /// The pane's size as tmux has it: (columns, rows).
    pub fn size(&self) -> (u16, u16) {
        let s = self.format("#{pane_width}x#{pane_height}");
        let parsed = s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
        parsed.unwrap_or_else(|| panic!("tmux printed the pane size as {s:?}"))
    }

    fn format(&self, format: &str) -> String {
        self.tmux_ok(&["display-message", "-p", "-t", &self.target, format])
            .unwrap_or_else(|e| panic!("tmux display-message {format}: {e:#}"))
            .trim()
            .to_string()
    }

    /// Resizes the window (the program gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let (x, y) = (cols.to_string(), rows.to_string());
        self.tmux_ok(&["resize-window", "-t", &self.target, "-x", &x, "-y", &y])?;
        Ok(())
    }

    /// Polls the screen until `cond` holds on it and returns that screen; panics after
    /// `timeout` naming `what`, with the last screen seen.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let ok = poll_until(timeout, || {
            last = self.screen();
            cond(&last)
        });
        match ok {
            Some(_) => last,
            None => panic!(
                "timed out after {timeout:?} waiting for {what}; the screen ({:?}) was:\n{}",
                self.size(),
                framed(&last)
            ),
        }
    }

    /// [`Tmux::wait_for`] the screen to contain `text`.
    pub fn wait_text(&self, timeout: Duration, text: &str) -> String {
        self.wait_for(timeout, &format!("{text:?} on screen"), |s| {
            s.contains(text)
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- last tmux screen -----\n{}",
                framed(&self.screen_or_error())
            );
        }
        // Our own server only (its private socket); it takes the programs in it along.
        let _ = self.tmux(&["kill-server"]);
    }
}

impl Tmux {
    fn screen_or_error(&self) -> String {
        match self.tmux(&["capture-pane", "-p", "-t", &self.target]) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(no screen: {e:#})"),
        }
    }
}

/// The screen with a margin on each line, so blank rows and trailing spaces are visible.
pub fn framed(screen: &str) -> String {
    screen
        .lines()
        .map(|l| format!("|{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first line of `screen` whose first word is `first` (a table row by its key column).
pub fn row<'a>(screen: &'a str, first: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
}

/// Whether `screen`'s row `first` has the word `word` in it.
pub fn row_has(screen: &str, first: &str, word: &str) -> bool {
    row(screen, first).is_some_and(|l| l.split_whitespace().any(|w| w == word))
}

/// Where `text` first appears on `screen`: (column, row), 0-based, counting one cell per
/// character (true of the box drawing, blocks and Latin text the TUI draws; not of wide CJK).
pub fn locate(screen: &str, text: &str) -> Option<(u16, u16)> {
    screen.lines().enumerate().find_map(|(row, line)| {
        let at = line.find(text)?;
        let col = line[..at].chars().count();
        Some((u16::try_from(col).ok()?, u16::try_from(row).ok()?))
    })
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn check(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_their_first_word() {
        let screen = "HOST  STATUS\nhost-0  online  0.1.0\nhost-10 offline\n";
        assert_eq!(row(screen, "host-1"), None);
        assert!(row_has(screen, "host-0", "online"));
        assert!(!row_has(screen, "host-0", "offline"));
        assert!(row_has(screen, "host-10", "offline"));
    }

    #[test]
    fn locate_counts_cells_not_bytes() {
        let screen = "top\n│ ▀ suspend/resume  p │\n";
        assert_eq!(locate(screen, "suspend"), Some((4, 1)));
        assert_eq!(locate(screen, "absent"), None);
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
