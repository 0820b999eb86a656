//! A simulated device under test with a serial console (console.md §6),
//! for `lagerd --sim` and the tests: a pseudo-terminal stands in for the
//! USB serial adapter. The device prints a boot banner (with a boot
//! counter) on start and on `reboot`, then a prompt; it echoes what is
//! typed and answers `help`, `uptime`, `reboot` and `spam N` (N numbered
//! log lines a second, `spam 0` to stop; Ctrl-C stops too).
//!
//! The adapter is reached through a stable symlink (`link`) that this
//! simulator points at the pty's slave, as udev's `/dev/serial/by-id`
//! links do on a box; production code knows only that path. A control
//! port (one line in, one line out, on loopback) can `unplug` (the pty
//! closes and the link goes away), `replug` (a new pty, so another
//! `/dev/pts/N`, and the link points there), `reboot`, `spam N`, `say
//! TEXT` (print a line) and `status`.
//!
//! Like a real UART the device never waits for its reader: bytes it
//! cannot hand to the pty (nobody reading, or unplugged) are dropped and
//! counted.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::serial::open_pty;

pub struct SimDut {
    /// The stable path the net names (`<state-dir>/sim/console1`).
    pub link: PathBuf,
    pub control: SocketAddr,
}

/// A control command with the channel for its one-line reply.
type Command = (String, Sender<String>);

impl SimDut {
    pub fn start(link: PathBuf) -> io::Result<SimDut> {
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let control = TcpListener::bind("127.0.0.1:0")?;
        let dut = SimDut {
            link: link.clone(),
            control: control.local_addr()?,
        };
        let mut device = Device::new(link);
        device.plug()?;
        let (commands, receive) = mpsc::channel::<Command>();
        thread::Builder::new()
            .name("sim-dut".into())
            .spawn(move || device.run(&receive))?;
        thread::Builder::new()
            .name("sim-dut-control".into())
            .spawn(move || {
                for stream in control.incoming().flatten() {
                    let commands = commands.clone();
                    let _ = thread::Builder::new()
                        .name("sim-dut-client".into())
                        .spawn(move || serve_control(stream, &commands));
                }
            })?;
        Ok(dut)
    }
}

fn serve_control(stream: std::net::TcpStream, commands: &Sender<Command>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let (reply_to, reply) = mpsc::channel();
        if commands.send((line.trim().to_string(), reply_to)).is_err() {
            return;
        }
        let answer = reply
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| "error: the simulated device did not answer".into());
        if writeln!(writer, "{answer}").is_err() {
            return;
        }
    }
}

/// The adapter while plugged in: the pty's two ends.
struct Pty {
    master: File,
    /// Held open in raw mode so nothing is echoed by the line discipline
    /// and the master never reads EIO while lagerd reopens.
    _slave: File,
    path: String,
}

struct Device {
    link: PathBuf,
    pty: Option<Pty>,
    boots: u64,
    booted_at: Instant,
    line: Vec<u8>,
    last_cr: bool,
    spam_per_sec: u64,
    spam_seq: u64,
    spam_next: Instant,
    dropped: u64,
}

impl Device {
    fn new(link: PathBuf) -> Device {
        Device {
            link,
            pty: None,
            boots: 0,
            booted_at: Instant::now(),
            line: Vec::new(),
            last_cr: false,
            spam_per_sec: 0,
            spam_seq: 0,
            spam_next: Instant::now(),
            dropped: 0,
        }
    }

    fn plug(&mut self) -> io::Result<()> {
        let (master, path) = open_pty()?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        raw(slave.as_raw_fd())?;
        // SAFETY: fcntl flags on our own descriptor.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        repoint(&self.link, Path::new(&path))?;
        self.pty = Some(Pty {
            master,
            _slave: slave,
            path,
        });
        Ok(())
    }

    fn unplug(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        self.pty = None;
    }

    fn run(mut self, commands: &Receiver<Command>) {
        self.boot();
        loop {
            while let Ok((command, reply)) = commands.try_recv() {
                let _ = reply.send(self.control(&command));
            }
            let wait = if self.spam_per_sec > 0 {
                self.spam_next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20))
            } else {
                Duration::from_millis(20)
            };
            self.wait_for_input(wait);
            self.spam();
        }
    }

    fn control(&mut self, command: &str) -> String {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "unplug" => {
                self.unplug();
                "ok unplugged".into()
            }
            "replug" => {
                if self.pty.is_some() {
                    return "ok already plugged".into();
                }
                match self.plug() {
                    Ok(()) => format!("ok {}", self.pty.as_ref().map_or("", |p| &p.path)),
                    Err(e) => format!("error: cannot open a pty: {e}"),
                }
            }
            "reboot" => {
                self.boot();
                format!("ok boot {}", self.boots)
            }
            "spam" => match rest.trim().parse() {
                Ok(rate) => {
                    self.start_spam(rate);
                    format!("ok spam {rate}")
                }
                Err(_) => "error: spam needs a number of lines a second".into(),
            },
            "say" => {
                self.print(&format!("{rest}\r\n"));
                "ok".into()
            }
            "status" => format!(
                "ok {} boot {} dropped {} spam {}",
                self.pty.as_ref().map_or("unplugged", |p| &p.path),
                self.boots,
                self.dropped,
                self.spam_seq
            ),
            other => format!(
                "error: unknown command '{other}' (unplug, replug, reboot, spam N, say TEXT, status)"
            ),
        }
    }

    /// Writes what the device prints; what the pty will not take now is
    /// lost, as on a real UART with nobody listening.
    fn print(&mut self, text: &str) {
        self.print_bytes(text.as_bytes());
    }

    fn print_bytes(&mut self, bytes: &[u8]) {
        let Some(pty) = &self.pty else {
            self.dropped += bytes.len() as u64;
            return;
        };
        let mut sent = 0;
        while sent < bytes.len() {
            // SAFETY: writes from a live slice to our own descriptor.
            let n = unsafe {
                libc::write(
                    pty.master.as_raw_fd(),
                    bytes[sent..].as_ptr().cast(),
                    bytes.len() - sent,
                )
            };
            if n <= 0 {
                break;
            }
            sent += n as usize;
        }
        self.dropped += (bytes.len() - sent) as u64;
    }

    fn boot(&mut self) {
        self.boots += 1;
        self.booted_at = Instant::now();
        self.spam_per_sec = 0;
        self.line.clear();
        let banner = format!(
            "\r\nLager simulated DUT, boot #{boots}\r\n\
             [    0.000000] Booting on the simulated CPU\r\n\
             [    0.000412] console: ttyS0 at 115200 baud\r\n\
             [    0.001024] sim: ready\r\n\
             Type 'help' for commands.\r\n",
            boots = self.boots
        );
        self.print(&banner);
        self.prompt();
    }

    fn prompt(&mut self) {
        self.print("sim> ");
    }

    fn start_spam(&mut self, rate: u64) {
        self.spam_per_sec = rate;
        self.spam_next = Instant::now();
    }

    /// Prints the log lines that are due, numbered, at the set rate.
    fn spam(&mut self) {
        if self.spam_per_sec == 0 {
            return;
        }
        let now = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / self.spam_per_sec as f64);
        // Never catch up more than a second's worth after a stall.
        if now.saturating_duration_since(self.spam_next) > Duration::from_secs(1) {
            self.spam_next = now;
        }
        let mut text = String::new();
        while self.spam_next <= now && text.len() < 64 * 1024 {
            self.spam_seq += 1;
            text.push_str(&format!(
                "[{:12.6}] spam {} lorem ipsum dolor sit amet\r\n",
                self.booted_at.elapsed().as_secs_f64(),
                self.spam_seq
            ));
            self.spam_next += interval;
        }
        if !text.is_empty() {
            self.print(&text);
        }
    }

    fn wait_for_input(&mut self, wait: Duration) {
        let Some(pty) = &self.pty else {
            thread::sleep(wait);
            return;
        };
        let mut pfd = libc::pollfd {
            fd: pty.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = wait.as_millis().min(1000) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, millis) } <= 0 {
            return;
        }
        let mut buffer = [0u8; 4096];
        // SAFETY: reads into our own buffer, at most its length.
        let n = unsafe {
            libc::read(
                pty.master.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if n > 0 {
            for &byte in &buffer[..n as usize] {
                self.typed(byte);
            }
        } else {
            thread::sleep(wait);
        }
    }

    /// One byte typed on the console, as a shell with echo treats it.
    fn typed(&mut self, byte: u8) {
        let after_cr = std::mem::replace(&mut self.last_cr, byte == b'\r');
        match byte {
            // The LF of a CR LF: one Enter, already handled.
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                self.print("\r\n");
                let line = String::from_utf8_lossy(&self.line).trim().to_string();
                self.line.clear();
                self.execute(&line);
            }
            0x03 => {
                self.spam_per_sec = 0;
                self.line.clear();
                self.print("^C\r\n");
                self.prompt();
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() {
                    self.print("\x08 \x08");
                }
            }
            _ => {
                self.line.push(byte);
                self.print_bytes(&[byte]);
            }
        }
    }

    fn execute(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match words.next() {
            None => {}
            Some("help") => self.print(
                "commands: help, uptime, reboot, spam N (N log lines a second; 0 stops)\r\n",
            ),
            Some("uptime") => {
                let text = format!(
                    "up {:.1} s, boot #{}\r\n",
                    self.booted_at.elapsed().as_secs_f64(),
                    self.boots
                );
                self.print(&text);
            }
            Some("reboot") => {
                self.print("rebooting...\r\n");
                self.boot();
                return;
            }
            Some("spam") => match words.next().and_then(|n| n.parse().ok()) {
                Some(rate) => {
                    self.start_spam(rate);
                    self.print(&format!("spamming {rate} lines a second\r\n"));
                }
                None => self.print("usage: spam N\r\n"),
            },
            Some(other) => {
                let text = format!("sim: {other}: command not found\r\n");
                self.print(&text);
            }
        }
        self.prompt();
    }
}

/// Points `link` at `target` atomically (a new link, then rename), so a
/// reader of the link never finds it missing while it moves.
fn repoint(link: &Path, target: &Path) -> io::Result<()> {
    let temporary = link.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)?;
    std::fs::rename(&temporary, link)
}

/// Raw mode: the device's own end passes bytes untouched.
fn raw(fd: i32) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut tio) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut tio);
        if libc::tcsetattr(fd, libc::TCSANOW, &tio) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
