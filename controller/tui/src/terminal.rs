//! The thin IO half: a real terminal (crossterm raw mode, alternate screen, mouse capture)
//! around the [`App`]. Input is read on its own thread and updates arrive on their channel, so
//! neither a slow controller nor a burst of updates ever blocks a key; drawing never awaits.
//! The terminal is restored on every exit path, a panic included.

use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::app::{App, Event};
use crate::theme::Theme;
use crate::update::{Command, Update};

/// Frames at most this often, however fast updates arrive.
const FRAME: Duration = Duration::from_millis(33);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Leaves raw mode and the alternate screen; safe to call twice.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, DisableMouseCapture);
}

/// Restores the terminal when dropped (normal return, error or unwinding panic).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn setup() -> anyhow::Result<Terminal<CrosstermBackend<Stdout>>> {
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)
        .context("cannot enter the alternate screen")?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    Terminal::new(CrosstermBackend::new(io::stdout())).context("cannot open the terminal")
}

/// Reads terminal input on a thread of its own until `stop`, sending each event on.
fn spawn_input(tx: mpsc::UnboundedSender<Event>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            let ev = match event::read() {
                Ok(TermEvent::Key(k)) => Event::Key(k),
                Ok(TermEvent::Mouse(m)) => Event::Mouse(m),
                Ok(TermEvent::Resize(w, h)) => Event::Resize(w, h),
                Ok(_) => continue,
                Err(_) => break,
            };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
}

/// Runs the TUI until the operator quits: updates from `backend_rx`, commands to
/// `command_tx` (unbounded so that sending never waits; the operator is the rate limit).
/// Sends [`Command::Quit`] before returning. If the backend goes away, the UI stays up and
/// says so.
pub async fn run(
    mut backend_rx: mpsc::Receiver<Update>,
    command_tx: mpsc::UnboundedSender<Command>,
    theme: Theme,
) -> anyhow::Result<()> {
    let mut terminal = setup()?;
    let _guard = Guard;
    let stop = Arc::new(AtomicBool::new(false));
    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    spawn_input(input_tx, stop.clone());
    let result = async {
        let mut app = App::new(theme, unix_now());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut backend_open = true;
        let mut dirty = true;
        let mut last_frame = Instant::now() - FRAME;
        loop {
            if dirty {
                let wait = FRAME.saturating_sub(last_frame.elapsed());
                if wait.is_zero() {
                    terminal.draw(|f| app.draw(f)).context("cannot draw")?;
                    last_frame = Instant::now();
                    dirty = false;
                }
            }
            let deadline = tokio::time::sleep(FRAME.saturating_sub(last_frame.elapsed()));
            let mut events = Vec::new();
            tokio::select! {
                ev = input_rx.recv() => match ev {
                    Some(ev) => events.push(ev),
                    None => anyhow::bail!("terminal input closed"),
                },
                up = backend_rx.recv(), if backend_open => match up {
                    Some(u) => events.push(Event::Update(u)),
                    None => {
                        backend_open = false;
                        events.push(Event::Update(Update::Disconnected {
                            reason: "the backend stopped".into(),
                            retry_in: None,
                        }));
                    }
                },
                _ = tick.tick() => events.push(Event::Tick(unix_now())),
                () = deadline, if dirty => {}
            }
            // Drain what is already queued so a burst costs one frame, keys first.
            while let Ok(ev) = input_rx.try_recv() {
                events.push(ev);
            }
            while let Ok(u) = backend_rx.try_recv() {
                events.push(Event::Update(u));
            }
            for ev in events {
                dirty = true;
                for command in app.handle(ev) {
                    // A closed channel: the backend is gone; the UI already says so.
                    let _ = command_tx.send(command);
                }
            }
            if app.should_quit() {
                return Ok(());
            }
        }
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    result
}
