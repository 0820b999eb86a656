//! deploybench: `lager update` of a box on loopback, end to end (issue 7,
//! target ≤ 3 s): ssh probe, lock, copy of the static lagerd, restart under
//! the supervisor, and the `/status` health check, through a real sshd and
//! the real `ssh` client, as the install tests run it.
//!
//! Installs once (timed too), then times `--runs` updates, then uninstalls.
//! A failed command stops the benchmark: a failure is not a fast update.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use argh::FromArgs;
use lager_bench::{fail, main_with, metric, require_binary, BenchError};
use lager_testsupport::{Sshd, TempDir};

/// Wall-clock time of `lager install` and `lager update` over loopback ssh.
#[derive(FromArgs)]
struct Args {
    /// the lager binary that deploys
    #[argh(option)]
    lager: PathBuf,
    /// the lagerd binary to deploy (the static release one)
    #[argh(option)]
    lagerd: PathBuf,
    /// timed updates (default 10)
    #[argh(option, default = "10")]
    runs: usize,
    /// install with this scripts/setup_and_deploy_box.sh instead of
    /// `lager install` (it builds or reuses target/dist/)
    #[argh(option)]
    setup: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("deploybench", || run(args))
}

struct Target<'a> {
    lager: &'a Path,
    lagerd: &'a Path,
    ssh: String,
    home: PathBuf,
    box_arg: String,
    prefix: String,
}

impl Target<'_> {
    /// Runs `lager <verb> ...` and returns its wall-clock seconds.
    fn timed(&self, verb: &str, extra: &[&str]) -> Result<f64, BenchError> {
        let mut command = Command::new(self.lager);
        command
            .arg(verb)
            .args(["--box", &self.box_arg, "--prefix", &self.prefix])
            .args(extra);
        self.time(&format!("lager {verb}"), command)
    }

    /// The bare-box script, installing into the same prefix.
    fn setup(&self, script: &Path) -> Result<f64, BenchError> {
        let mut command = Command::new(script);
        command.arg(&self.box_arg).args([
            "--",
            "--prefix",
            &self.prefix,
            "--listen",
            &self.box_arg,
        ]);
        self.time("setup_and_deploy_box.sh", command)
    }

    fn time(&self, what: &str, mut command: Command) -> Result<f64, BenchError> {
        let start = Instant::now();
        let out = command
            .env("LAGER_SSH", &self.ssh)
            .env("LAGER_CONFIG_FILE_DIR", &self.home)
            .env_remove("CI")
            .output()?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(fail!(
                "{what} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(secs)
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    let lager = require_binary(&args.lager)?;
    let lagerd = require_binary(&args.lagerd)?;
    let dir = TempDir::new("deploybench");
    let sshd = Sshd::start(&dir.path().join("sshd")).map_err(|why| {
        fail!("sshd cannot start: {why} (Debian: apt-get install openssh-server)")
    })?;
    let config = sshd.client("bench", true, None);
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let box_arg = format!("127.0.0.1:{port}");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let target = Target {
        lager: &lager,
        lagerd: &lagerd,
        ssh: format!("ssh -F {}", config.display()),
        home,
        box_arg: box_arg.clone(),
        prefix: dir.path().join("box").display().to_string(),
    };
    let lagerd_arg = target.lagerd.display().to_string();
    let install = match &args.setup {
        Some(script) => target.setup(script)?,
        None => target.timed("install", &["--lagerd", &lagerd_arg, "--listen", &box_arg])?,
    };
    let how = if args.setup.is_some() {
        "setup_and_deploy_box.sh"
    } else {
        "lager install"
    };
    eprintln!("  {how:<18} {install:>6.2} s");
    metric("deploy.install_s", format!("{install:.2}"));
    let mut updates = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        updates.push(target.timed("update", &["--lagerd", &lagerd_arg])?);
    }
    target.timed("uninstall", &["--yes"])?;
    updates.sort_by(f64::total_cmp);
    let median = updates[updates.len() / 2];
    let max = updates[updates.len() - 1];
    let size = std::fs::metadata(target.lagerd)?.len();
    eprintln!(
        "  lager update       median {median:.2} s, max {max:.2} s over {} runs ({:.2} MiB lagerd)",
        updates.len(),
        size as f64 / 1048576.0
    );
    metric("deploy.update_median_s", format!("{median:.2}"));
    metric("deploy.update_max_s", format!("{max:.2}"));
    Ok(())
}
